"""Who is running: this process's identity, and whether another one is still alive.

A run records its host, pid and the pid's start time (tags for ``mltrack doctor``, the journal
header for ``mltrack sync``), so a later process can tell a live owner from a dead one even
after the pid was reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from mltrack.errors import Terminated

# The tags by which `mltrack doctor` tells a live run from an orphan.
HOST_TAG, PID_TAG, PID_START_TAG = "mltrack.host", "mltrack.pid", "mltrack.pid_start"
HEARTBEAT_TAG = "mltrack.heartbeat"


def identity() -> dict[str, Any]:
    import psutil

    me = psutil.Process()
    return {"host": socket.gethostname(), "pid": me.pid, "pid_start": round(me.create_time(), 2)}


def is_gone(host: str, pid: int, started: float) -> bool | None:
    """True if that process has ended, False if it runs, None if it is on another host."""
    if host != socket.gethostname():
        return None
    import psutil

    try:
        process = psutil.Process(pid)
        # The pid may have been reused by a newer process after ours died.
        return abs(process.create_time() - started) > 1.0 or process.status() == "zombie"
    except psutil.NoSuchProcess:
        return True


def process_tags() -> dict[str, str]:
    me = identity()
    return {
        HOST_TAG: me["host"],
        PID_TAG: str(me["pid"]),
        PID_START_TAG: f"{me['pid_start']:.2f}",
        HEARTBEAT_TAG: str(int(time.time())),
    }


@contextlib.contextmanager
def sigterm_as_exception(unless_handled: bool = False) -> Iterator[None]:
    """Turn SIGTERM into a ``Terminated`` exception in the main thread, so runs end KILLED.

    ``unless_handled``: leave a handler the program installed alone (and do nothing outside
    the main thread, where Python cannot install one): ``mltrack.start_run`` in a user's
    script, where SIGTERM is how ``torchrun`` stops the ranks of a failed job.
    """
    if unless_handled and (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        # Ignore further SIGTERMs while we unwind and close the runs.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Hold SIGTERM back while a run ends (main thread only), then deliver it again.

    A launcher that saw another rank die sends SIGTERM to rank 0 right then, often while rank
    0 is already ending the run on the collective's error: a SIGTERM at its default action
    there killed the process mid-``finish`` and left the run RUNNING.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if arrived:
            os.kill(os.getpid(), signal.SIGTERM)


def owned_by(path: Path, owner: dict[str, Any]) -> bool:
    """Whether ``path``'s header names ``owner`` (host, pid, pid start) as its process."""
    try:
        with path.open() as handle:
            header = json.loads(handle.readline())
    except (OSError, ValueError):
        return False
    return all(header.get(k) == owner.get(k) for k in ("host", "pid", "pid_start"))


def owner_gone(header: dict[str, Any]) -> bool:
    """Whether the process that wrote a journal's header has ended (this host only)."""
    host, pid = str(header.get("host", "")), int(header.get("pid", 0))
    return is_gone(host, pid, float(header.get("pid_start", 0))) is True
