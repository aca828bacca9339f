"""The writer: the process of mltrack's own that talks to MLflow for a training process.

A training process imports no MLflow. Its runs journal what they log (``mltrack.tracking.spool``),
and its writer, ``python -m mltrack.tracking.writer``, started with the process's first run and
serving all its later ones, delivers each journal (``mltrack.tracking.courier``): it creates the
runs, sends records in order, logs models, registers versions, keeps the heartbeat and, when the
training process dies without ending a run (SIGKILL, the OOM killer), ends it KILLED within a
second or two. The design is W&B's service process: the training never waits for a store, and a
store that is away (refused connection, unknown host, time-out, 5xx) costs nothing but a line: the
writer retries with back-off, and what it could not deliver when its process ended stays journaled
for ``mltrack sync``.

The writer runs in a session of its own, so Ctrl-C in a terminal reaches the training process
alone and the writer finishes delivering before it exits; it exits once its process has ended
and every journal is delivered or waiting for a store that is away.

Between the two processes there are files: the journal (appended by training), the courier's
``<journal>.ack`` (the run id once made, how many lines are in the store, and the state:
``ok``, ``away``, ``bad``, ``refused``, ``done``), store checks (``check``); and the writer's
stdin, for a run's end a full disk could not take (``tell_end``). ``embed()`` hosts the writer
on a thread of this process instead (the in-process tests; MLflow is then loaded here).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltrack.errors import UsageError
from mltrack.tracking import process, spool
from mltrack.tracking.limits import redact_uri

if TYPE_CHECKING:
    from mltrack.tracking.run import Run

POLL_S = 0.02  # how often the training side reads an ack while it waits
SCAN_S = 0.1  # how often the writer looks for new journals and whether its process lives
OWNER_CHECK_S = 0.5


class Writer:
    """The delivery loop: every journal of ``owner`` (a ``process.identity()``) in ``folder``.

    ``owner=None``: journals are handed over with ``adopt`` and the loop runs until ``stop``.
    """

    def __init__(self, folder: Path, owner: dict[str, Any] | None, stores: Any = None) -> None:
        from mltrack.tracking.courier import Courier  # noqa: F401 - the writer's side loads MLflow
        from mltrack.tracking.warmup import STORES

        self.folder, self.owner = folder, owner
        self.stores = stores or STORES
        self.couriers: list[Any] = []
        self.keys: dict[str, str] = {}  # journal key -> run id, for parent links
        self._known: set[Path] = set()
        self._adopted: list[Path] = []
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.told: dict[str, tuple[str, str]] = {}  # journal -> (outcome, error): ``tell_end``

    def listen(self, lines: Any) -> None:
        """Take ``tell_end`` messages (JSON lines) from the training process: the ends of runs
        whose journal could not take them (a full disk)."""
        for line in lines:
            with contextlib.suppress(ValueError, KeyError):
                told = json.loads(line)
                with self._lock:
                    self.told[told["journal"]] = (told["outcome"], told["error"])

    def adopt(self, path: Path) -> None:
        with self._lock:
            self._adopted.append(path)

    def _take(self, path: Path) -> None:
        from mltrack.tracking.courier import Busy, Courier

        self._known.add(path)
        with contextlib.suppress(Busy, FileNotFoundError, ValueError):  # another has it, or gone
            self.couriers.append(Courier(path, self.stores, keys=self.keys))

    def _answer_checks(self) -> None:
        """Answer ``check`` requests (``check``): ``<request>.answer`` with the verdict."""
        pid = (self.owner or {}).get("pid", os.getpid())
        for request in self.folder.glob(f"check-{pid}-*.json"):
            answer = request.with_suffix(".answer")
            if answer.exists():
                continue
            try:
                asked = json.loads(request.read_text())
            except (OSError, ValueError):
                continue  # being written
            state, reason = spool.check_store(self.stores, asked["uri"], asked["experiment"])
            temporary = answer.with_suffix(".tmp")
            temporary.write_text(json.dumps({"state": state, "reason": reason}))
            os.replace(temporary, answer)

    def _scan(self) -> None:
        if self.folder.is_dir():
            self._answer_checks()

        with self._lock:
            adopted, self._adopted = self._adopted, []
        for path in adopted:
            self._take(path)
        if self.owner is None or not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.jsonl"), key=_created):
            if path not in self._known and process.owned_by(path, self.owner):
                self._take(path)

    def serve(self) -> None:
        """Deliver until ``stop``, or until the owner has ended and nothing more can go."""
        from mltrack.tracking.courier import AWAY
        from mltrack.tracking.process import owner_gone

        checked, gone = 0.0, False
        while not self.stop.is_set():
            if self.owner is not None and time.monotonic() - checked >= OWNER_CHECK_S:
                checked, gone = time.monotonic(), owner_gone(self.owner)
            self._scan()
            progressed = False
            for courier in list(self.couriers):
                courier.owner_gone = gone
                with self._lock:
                    courier.told = self.told.get(str(courier.path), courier.told)
                progressed = courier.step() or progressed
                if courier.finished:
                    self.couriers.remove(courier)
            if gone and all(c.state == AWAY for c in self.couriers):
                for courier in self.couriers:
                    courier.release()
                return
            self.stop.wait(POLL_S if progressed else SCAN_S)


# -- the training process's side: no MLflow here ------------------------------------------------
class Handle:
    """This process's writer for one spool folder: a child process, or a thread (``embed``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.popen: subprocess.Popen[str] | None = None
        self.embedded: Writer | None = None
        self.thread: threading.Thread | None = None

    def alive(self) -> bool:
        if self.embedded is not None:
            return self.thread is not None and self.thread.is_alive()
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        if _EMBED:
            self.embedded = Writer(self.folder, None)
            self.thread = threading.Thread(
                target=self.embedded.serve, name="mltrack-writer", daemon=True
            )
            self.thread.start()
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
            # The writer retries by itself: one MLflow request must not hold it for minutes.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get(
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"
            ),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
        }
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "mltrack.tracking.writer", str(self.folder),
             json.dumps(process.identity())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
            start_new_session=True,  # Ctrl-C in a terminal is the training's, not the writer's
        )  # fmt: skip

    def hand(self, journal: Path) -> None:
        """Make sure a writer serves ``journal`` (started, or started again if it died)."""
        if not self.alive():
            self.start()
        if self.embedded is not None:
            self.embedded.adopt(journal)


_EMBED = False
_SAID_AWAY: set[str] = set()  # the stores this process said were away (said once each)
_CHECKED: set[tuple[str, str]] = set()  # (store, experiment) the writer said take runs
_HANDLES: dict[Path, Handle] = {}
_HANDLES_LOCK = threading.Lock()


def embed(on: bool = True) -> None:
    """Host writers on a thread of this process from now on (the in-process tests do)."""
    global _EMBED
    _EMBED = on


def serve(journal: Path) -> Handle:
    """The writer of ``journal``'s folder for this process, started if need be."""
    with _HANDLES_LOCK:
        handle = _HANDLES.setdefault(journal.parent, Handle(journal.parent))
        handle.hand(journal)
    return handle


def start(folder: Path) -> None:
    """Start this process's writer for ``folder`` now (its start-up, MLflow's import mostly,
    then overlaps the framework's and the data's loading)."""
    with _HANDLES_LOCK:
        handle = _HANDLES.setdefault(folder, Handle(folder))
        if not handle.alive():
            handle.start()


def ask(folder: Path, uri: str, experiment: str) -> Path:
    """Ask this process's writer (started if need be) whether ``uri`` takes runs in
    ``experiment``; ``answer`` waits for the verdict. Returns the request."""
    start(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    request = folder / f"check-{os.getpid()}-{time.monotonic_ns()}.json"
    temporary = request.with_suffix(".tmp")
    temporary.write_text(json.dumps({"uri": uri, "experiment": experiment}))
    os.replace(temporary, request)
    return request


def answer(request: Path, timeout_s: float) -> tuple[str, str]:
    """The writer's verdict on ``ask``'s request: (state, why), ``ok``, ``away`` or ``bad``
    (``check_store``); ``away`` if it did not answer in ``timeout_s``. An ``ok`` spares the
    process's runs in that store and experiment the wait for their creation (``opened``)."""
    reply = request.with_suffix(".answer")
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                found = json.loads(reply.read_text())
            except (OSError, ValueError):
                time.sleep(POLL_S)
                continue
            asked = json.loads(request.read_text())
            if found["state"] == "ok":
                _CHECKED.add((redact_uri(asked["uri"]), asked["experiment"]))
            return str(found["state"]), str(found["reason"])
        return "away", f"the writer did not answer in {timeout_s:.0f} s"
    finally:
        request.unlink(missing_ok=True)
        reply.unlink(missing_ok=True)


def checked(uri: str, experiment: str) -> bool:
    """Whether the writer said ``uri`` takes runs in ``experiment`` (``answer``)."""
    return (redact_uri(uri), experiment) in _CHECKED


def wait(
    journal: Path, states: tuple[str, ...], timeout_s: float, lines: int = 0
) -> dict[str, Any]:
    """The journal's ack once the writer has read its first ``lines`` lines and its state is
    one of ``states``, or the journal is done; the last ack when ``timeout_s`` passed. A
    writer that died meanwhile is started again."""
    from mltrack.tracking.courier import DONE
    from mltrack.tracking.spool import read_ack

    deadline = time.monotonic() + timeout_s
    checked = time.monotonic()
    while True:
        ack = read_ack(journal)
        state = ack.get("state")
        # "away" must be about the lines asked for (the store may be back for them); the
        # other states are final for the journal.
        seen = state != "away" or int(ack.get("read", 0)) >= lines
        if state == DONE or (seen and state in states):
            return ack
        if time.monotonic() >= deadline:
            return ack
        if time.monotonic() - checked > 1.0:  # the writer was killed: the next one takes over
            checked = time.monotonic()
            serve(journal)
        time.sleep(POLL_S)


def tell_end(journal: Path, outcome: str, error: str) -> bool:
    """Tell the writer how a run ended when its journal cannot take the end (a full disk):
    through the writer's stdin, no disk involved. Whether it was told."""
    with _HANDLES_LOCK:
        handle = _HANDLES.get(journal.parent)
    message = {"journal": str(journal), "outcome": outcome, "error": error}
    if handle is None:
        return False
    if handle.embedded is not None:
        handle.embedded.listen([json.dumps(message)])
        return True
    if handle.popen is None or handle.popen.stdin is None or not handle.alive():
        return False
    try:
        handle.popen.stdin.write(json.dumps(message) + "\n")
        handle.popen.stdin.flush()
    except OSError:
        return False
    return True


def said_away(where: str) -> bool:
    """Whether this process already said the store ``where`` (redacted) is away."""
    return where in _SAID_AWAY


def opened(run: Run, uri: str, timeout_s: float) -> None:
    """Hand the run's journal to the writer and take its first answer: the run's id, bad
    input (``UsageError``, the journal discarded: no run), or the store away (one line)."""
    from mltrack.tracking.courier import AWAY, BAD, OK, REFUSED

    where = redact_uri(uri)
    if run.offline:
        reason = "offline (MLTRACK_OFFLINE=1 or --offline)"
    else:
        serve(run.journal.path)
        ack = wait(run.journal.path, (OK, AWAY, BAD, REFUSED), timeout_s)
        state, reason = ack.get("state"), str(ack.get("reason", ""))
        if state in (BAD, REFUSED) and not run.journal.lines:  # at its start: no run
            run.sink.close(0)
            run.journal.delete()
            raise UsageError(reason)
        if ack.get("run_id") or state in (BAD, REFUSED):  # later: its end says why
            run.run_id, run.experiment_id = str(ack.get("run_id", "")), str(ack["experiment_id"])
            return
        reason = reason or f"the writer did not answer in {timeout_s:.0f} s"
    if where not in _SAID_AWAY:
        _SAID_AWAY.add(where)
        print(
            f"mltrack: {where} is away ({reason}); training goes on and its runs are journaled "
            f"in {run.journal.path.parent}: delivered when the store is back, or by "
            "`mltrack sync`",
            file=sys.stderr,
            flush=True,
        )


# -- the writer's side helpers -----------------------------------------------------------------
def _created(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def main(argv: list[str]) -> int:
    """``python -m mltrack.tracking.writer FOLDER OWNER_JSON``."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mltrack writer: %(message)s"))
    logger = logging.getLogger("mltrack.tracking.writer")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # MLflow's import sets its loggers' level from MLFLOW_LOGGING_LEVEL (INFO by default),
    # undoing any set before it: the writer, started before the training quiets the
    # frameworks, printed "Creating initial MLflow database tables..." on a new store.
    os.environ["MLFLOW_LOGGING_LEVEL"] = "ERROR"
    # MLflow's import is most of a run's start-up: begun at once, on a thread, so a process
    # that ends before its first run (bad input) is seen gone without waiting for it.
    threading.Thread(target=importlib.import_module, args=("mlflow",), daemon=True).start()
    writer = Writer(Path(argv[0]), json.loads(argv[1]))
    threading.Thread(target=writer.listen, args=(sys.stdin,), daemon=True).start()
    writer.serve()
    report = os.environ.get("MLTRACK_WRITER_REPORT")  # benchmarks/startup reads its CPU
    if report:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(report, "a") as handle:
            handle.write(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
