"""Orphaned runs: found by process identity on this host, by heartbeat elsewhere."""

from __future__ import annotations

import signal
import socket
import time
from types import SimpleNamespace

from mltrack import cli
from mltrack.tracking import doctor
from mltrack.tracking.process import HEARTBEAT_TAG, HOST_TAG, PID_START_TAG, PID_TAG
from tests.conftest import all_runs, epochs_logged, start_training, wait_until


def fake_run(**tags: str) -> SimpleNamespace:
    return SimpleNamespace(data=SimpleNamespace(tags=tags))


def reason(run: SimpleNamespace, now: float, host: str) -> str:
    return doctor.why_orphaned(run, 600, now, host) or ""


def test_reasons():
    host, now = socket.gethostname(), time.time()
    dead = fake_run(
        **{HEARTBEAT_TAG: str(int(now)), HOST_TAG: host, PID_TAG: "999999", PID_START_TAG: "1.0"}
    )
    assert "is gone" in reason(dead, now, host)
    import psutil

    me = psutil.Process()
    alive = fake_run(
        **{
            HEARTBEAT_TAG: "0",
            HOST_TAG: host,
            PID_TAG: str(me.pid),
            PID_START_TAG: f"{me.create_time():.2f}",
        }
    )
    assert doctor.why_orphaned(alive, 600, now, host) is None  # old heartbeat, live process
    reused = fake_run(
        **{HEARTBEAT_TAG: str(int(now)), HOST_TAG: host, PID_TAG: str(me.pid), PID_START_TAG: "1.0"}
    )
    assert "is gone" in reason(reused, now, host)  # pid reused
    remote = {HOST_TAG: "elsewhere", PID_TAG: "1", PID_START_TAG: "1.0"}
    stale = fake_run(**remote, **{HEARTBEAT_TAG: str(int(now - 700))})
    assert "no heartbeat from elsewhere" in reason(stale, now, host)
    assert (
        doctor.why_orphaned(
            fake_run(**remote, **{HEARTBEAT_TAG: str(int(now - 100))}), 600, now, host
        )
        is None
    )
    assert doctor.why_orphaned(fake_run(), 600, now, host) is None  # not an mltrack run


def test_sigkilled_training_is_ended_failed_by_doctor(tmp_path, client, store, capsys):
    """A training SIGKILLed together with its writer (the machine or the container went, or
    a kill of both): nobody ends its run but ``mltrack doctor``. A training killed alone is
    ended KILLED by its writer (tests/test_writer.py)."""
    import psutil

    proc = start_training(tmp_path, "--synthetic-size", "512", "--epochs", "500")
    try:
        wait_until(lambda: epochs_logged(client) >= 1, 180, "the first epoch")
        [writer] = [
            child
            for child in psutil.Process(proc.pid).children()
            if "mltrack.tracking.writer" in child.cmdline()
        ]
        writer.kill()  # not our child: dead once a zombie of the training's
        wait_until(lambda: writer.status() == psutil.STATUS_ZOMBIE, 30, "the writer killed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    [run] = all_runs(client)
    assert run.info.status == "RUNNING"  # nobody ended it
    assert cli.main(["doctor", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert f"{run.info.run_id} " in out and "ended 1 orphaned run(s) as FAILED" in out
    [run] = all_runs(client)
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed"
    assert f"process {proc.pid} on {socket.gethostname()} is gone" in run.data.tags["error"]
    assert cli.main(["doctor", "--tracking-uri", store]) == 0  # idempotent
    assert "ended 0 orphaned run(s)" in capsys.readouterr().out
