"""The ``mltrack`` command. Sub-commands import their heavy dependencies lazily."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mltrack.run import resolve_tracking_uri


def _ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI over the same store the experiments write to."""
    uri = resolve_tracking_uri(args.tracking_uri)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port}", flush=True)
    os.execv(sys.executable, command)
    return 0  # pragma: no cover - execv does not return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltrack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("ui", help="serve the MLflow UI for the tracking store")
    ui.add_argument(
        "--tracking-uri",
        default=None,
        help="store to serve (default: MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
