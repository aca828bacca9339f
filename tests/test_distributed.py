"""The launcher's environment read as a ``World``, the job's epoch record merged from every
rank's, and a follower rank that writes nothing (issue 27; the real launches are in
tests/test_torchrun.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mltrack.measure.ledger import Ledger
from mltrack.tracking import distributed
from mltrack.tracking.distributed import World, merge_epoch, world
from mltrack.tracking.follower import Follower
from tests.conftest import ROOT, all_runs
from tests.test_cli import free_port

TORCHRUN = {
    "RANK": "3",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1",
    "TORCHELASTIC_RUN_ID": "none",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}


def test_one_process_is_rank_zero_of_a_world_of_one():
    assert world({}) == World() and not World().distributed and World().is_rank_zero
    assert world({"RANK": "0", "WORLD_SIZE": "1"}) == World()  # a launcher with one process


def test_torchrun_and_accelerate_environments():
    here = world(TORCHRUN)
    assert (here.rank, here.size, here.local_rank, here.local_size, here.node_rank) == (
        3, 4, 1, 2, 1,
    )  # fmt: skip
    assert here.launcher == "torchrun" and here.torch and not here.is_rank_zero
    assert world({**TORCHRUN, "ACCELERATE_DYNAMO_BACKEND": "NO"}).launcher == "accelerate"
    bare = {"RANK": "1", "WORLD_SIZE": "2"}  # a launcher of one's own: env:// only
    assert world(bare).launcher == "env" and world(bare).local_rank == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK: got 2, expected 0..1"),
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK/WORLD_SIZE"),
        ({"TF_CONFIG": "{not json"}, "TF_CONFIG: got"),
    ],
)
def test_an_environment_no_launcher_sets_is_named(env, message):
    with pytest.raises(ValueError, match=message):
        world(env)


def test_keras_multi_worker_chief_is_rank_zero():
    cluster = {"chief": ["h:1"], "worker": ["h:2", "h:3"]}
    layout = {"cluster": cluster, "task": {"type": "chief", "index": 0}}
    chief = world({"TF_CONFIG": json.dumps(layout)})
    assert chief.is_rank_zero and chief.size == 3 and chief.launcher == "tf_config"
    assert not chief.torch  # no torch process group for a Keras job
    layout["task"] = {"type": "worker", "index": 1}
    assert world({"TF_CONFIG": json.dumps(layout)}).rank == 2
    # Without a chief, worker 0 is the chief (Keras' rule).
    alone = {"cluster": {"worker": ["h:2", "h:3"]}, "task": {"type": "worker", "index": 0}}
    assert world({"TF_CONFIG": json.dumps(alone)}).is_rank_zero
    one = {"cluster": {"worker": ["h:2"]}, "task": {"type": "worker", "index": 0}}
    assert world({"TF_CONFIG": json.dumps(one)}) == World()


def test_the_job_record_takes_the_slowest_rank_and_all_ranks_samples(monkeypatch):
    ranks = [
        {"train_wall_s": 10.0, "comm_wait_s": 6.0, "samples": 100.0, "loss": 1.0,
         "epoch_user_cpu_s": 3.0, "data_wait_s": 0.1, "peak_rss_mb": 500.0},
        {"train_wall_s": 10.2, "comm_wait_s": 0.2, "samples": 100.0, "loss": 3.0,
         "epoch_user_cpu_s": 9.0, "data_wait_s": 7.0, "peak_rss_mb": 700.0},
    ]  # fmt: skip
    monkeypatch.setattr(distributed, "world", lambda env=None: World(0, 2, launcher="torchrun"))
    monkeypatch.setattr(distributed, "gather", lambda value: ranks)
    job = merge_epoch({**ranks[0], "accuracy": 0.5}, 100, Ledger())  # no FLOPs, no peak
    # Global throughput over the longest wall, never rank 0's rate x world size.
    assert job["samples_per_s"] == pytest.approx(200 / 10.2)
    assert job["train_wall_s"] == 10.2
    # Rank 1 worked 10 s on its own, rank 0 4 s (it waited 6 s for rank 1).
    assert (job["slowest_rank"], job["slowest_rank_s"], job["fastest_rank_s"]) == (1.0, 10.0, 4.0)
    assert job["rank_time_ratio"] == pytest.approx(2.5)
    assert job["data_wait_s"] == 7.0  # the straggler's, which says why it is slow
    assert job["loss"] == pytest.approx(2.0)  # weighted by samples
    assert job["epoch_user_cpu_s"] == 12.0 and job["peak_rss_mb"] == 700.0


def test_other_ranks_get_their_own_record_back(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda env=None: World(1, 2, launcher="torchrun"))
    monkeypatch.setattr(distributed, "gather", lambda value: [value, value])
    record = {"train_wall_s": 1.0}
    assert merge_epoch(record, 10, Ledger()) is record


def test_a_follower_writes_nothing_and_keeps_the_outcome(tmp_path, store, client, monkeypatch):
    monkeypatch.setenv("MLTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    follower = Follower("abc", "1", store)
    follower.log_params({"a": 1})
    follower.set_tags({"b": 2})
    follower.log_metrics({"loss": 1.0}, step=0)
    follower.end_epoch(0, {"loss": 1.0})
    follower.log_text("hello", "notes/hello.txt")
    assert follower.stop("diverged", epoch=0) and follower.stopping
    assert follower.outcome == "diverged" and not follower.is_rank_zero
    follower.finish()
    assert not (tmp_path / "spool").exists()
    assert all_runs(client) == []


def test_every_rank_learns_the_run_id_and_the_epoch_a_resumed_job_goes_on_from(monkeypatch):
    sent: list[dict] = []

    def gather(value: dict) -> list[dict]:
        sent.append(value)
        rank0 = {**value, "run_id": "abc", "first_epoch": 2, "node_rank": 0, "host": "h"}
        return [rank0, {**value, "node_rank": 0, "host": "h"}]

    monkeypatch.setattr(distributed, "world", lambda env=None: World(1, 2, 1, 2, 0, "torchrun"))
    monkeypatch.setattr(distributed, "gather", gather)
    assert distributed.join("") == ("abc", {}, 2)  # rank 1: rank 0's id and first epoch
    assert sent[0]["run_id"] == "" and {"hardware", "fingerprint"} <= set(sent[0])


AT_EXIT = """
import atexit, torch.distributed as dist
# Registered first, so it runs last (atexit is last in, first out): what the interpreter's
# finalization would find.
atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))
from mltrack.tracking import distributed
distributed.process_group()
print("backend:", dist.get_backend(), flush=True)
"""


@pytest.mark.parametrize("own_group", [True, False])
def test_gloo_groups_are_destroyed_before_the_interpreter_finalizes(tmp_path, own_group):
    """gloo's threads abort a process that exits with its group alive (pytorch#190489): a
    Trainer job under torchrun failed so. Whether mltrack or the script made the group."""
    script = AT_EXIT
    if not own_group:  # the script's own group, as accelerate makes it for a Trainer
        script = 'import torch.distributed as d; d.init_process_group("cpu:gloo")' + script
    env = {
        **os.environ,
        **dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1"),
        **dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), PYTHONPATH=str(ROOT)),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gloo" in result.stdout.split("backend: ")[1].splitlines()[0], result.stdout
    assert "initialized at exit: False" in result.stdout, result.stdout
