"""Exports share one verifier process; a dead verifier is reported and replaced (issue 13)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from mltrack.export import artifacts
from mltrack.tracking.run import start_run
from tests.conftest import all_runs

pytestmark = pytest.mark.torch


def export_one(store: str, name: str) -> bool:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    probe = torch.rand(4, 3, 2, 2)
    with start_run("export", run_name=name, tracking_uri=store) as run:
        return artifacts.export_torch(run, model, probe, precision="fp32")


def test_exports_of_one_process_share_one_verifier_and_survive_its_death(store, client):
    artifacts.VERIFIER.close()
    assert export_one(store, "first")
    verifier = artifacts.VERIFIER.proc
    assert verifier is not None and verifier.poll() is None
    assert export_one(store, "second")
    assert artifacts.VERIFIER.proc is verifier  # reused: the framework started once

    verifier.kill()
    verifier.wait()
    assert export_one(store, "third")  # a new verifier, this export verified all the same
    assert artifacts.VERIFIER.proc is not verifier

    runs = all_runs(client, "export")
    assert [r.data.tags["reload_ok"] for r in runs] == ["true"] * 3
    assert {r.data.tags["reload_formats"] for r in runs} == {"export,pyfunc,torchscript"}
    artifacts.VERIFIER.close()
    assert artifacts.VERIFIER.proc is None


def test_a_verifier_that_dies_mid_request_fails_the_check_with_its_last_words(
    store, client, monkeypatch
):
    crash = "import sys; sys.stdin.readline(); sys.exit('injected verifier crash')"
    monkeypatch.setattr(artifacts, "VERIFIER", artifacts.Verifier([sys.executable, "-c", crash]))
    assert not export_one(store, "crashed")
    [run] = all_runs(client, "export")
    assert run.data.tags["reload_ok"] == "false" and run.info.status == "FINISHED"
    assert run.data.tags["reload_error"] == "injected verifier crash"
    artifacts.VERIFIER.close()


def test_a_verifier_that_hangs_is_timed_out_not_blamed_on_its_last_log_line(
    store, client, monkeypatch
):
    # Reads the request, logs a harmless line, then waits for stdin to close (never answers).
    hang = "import sys; sys.stdin.readline(); print('W: a warning', file=sys.stderr, flush=True);"
    hang += " sys.stdin.readline()"
    monkeypatch.setattr(artifacts, "RELOAD_TIMEOUT_S", 2)
    monkeypatch.setattr(artifacts, "VERIFIER", artifacts.Verifier([sys.executable, "-c", hang]))
    assert not export_one(store, "hung")
    [run] = all_runs(client, "export")
    assert run.data.tags["reload_error"] == "the verifier gave no answer within 2 s"
    assert artifacts.VERIFIER.proc is None  # closed: the next export starts a new one
