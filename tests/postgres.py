"""A real PostgreSQL server for tests: its own data directory and port on 127.0.0.1.

PostgreSQL refuses to run as root, so as root (CI) the server runs as the ``postgres`` user
that Debian's package creates; its directory lives outside pytest's root-only tmp tree.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.test_cli import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: run scripts/system-deps.sh")
    return found[-1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server(databases: tuple[str, ...] = ("optuna", "mlflow")) -> Iterator[str]:
    """Start a throwaway server; yield ``postgresql://mltrack@127.0.0.1:PORT`` (no database)."""
    root = Path(tempfile.mkdtemp(prefix="mltrack-pg-"))
    root.chmod(0o755)
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()

    def run(command: list[str]) -> None:
        subprocess.run(
            _as_server_user(command), check=True, capture_output=True, text=True, timeout=120
        )

    run([_bin("initdb"), "-D", str(data), "-U", "mltrack", "--auth=trust", "-E", "UTF8"])
    run(
        [
            _bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=300",
            "start",
        ]
    )
    try:
        for name in databases:
            run([_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mltrack", name])
        yield f"postgresql://mltrack@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_server_user([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
