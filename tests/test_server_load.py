"""Eight runs writing to one real ``mlflow server`` on PostgreSQL at once lose nothing: the
short form of ``benchmarks/server_load.py`` (issue 18), counted in the database itself."""

from __future__ import annotations

from benchmarks.server_load import run_load


def test_eight_concurrent_writers_lose_no_point_param_tag_or_artifact(tmp_path):
    load = run_load(writers=8, seconds=8.0, outage_s=0.0, folder=tmp_path)
    assert load.logged > 8 * 300  # each logged 2 points per 50 ms step and 12 per epoch
    assert load.lost == 0
    assert load.other_lost == []
