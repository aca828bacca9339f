"""Small results kept between processes in ``~/.cache/mltrack`` (``MLTRACK_CACHE_DIR``).

Each file is one JSON object, ``{key: value}``: what a key names must not change while the key
stays the same (a CPU's fingerprint for its measured peaks, an MLflow release for the head of
its migrations). A missing or unreadable file is an empty cache, and every write replaces the
file atomically, so concurrent processes (sweep workers) never read half a file; when two
write at once one's entry may be lost, and is computed again next time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    return Path(os.environ.get("MLTRACK_CACHE_DIR") or Path.home() / ".cache/mltrack")


def _read(name: str) -> dict[str, Any]:
    try:
        found = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def lookup(name: str, key: str) -> Any:
    """The value cached under ``key`` in the file ``name``, or ``None``."""
    return _read(name).get(key)


def keep(name: str, key: str, value: Any) -> None:
    """Cache ``value`` (JSON-able) under ``key`` in the file ``name``; a cache that cannot be
    written (a read-only home) is skipped."""
    cached = _read(name)
    cached[key] = value
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        tmp.replace(path)
    except OSError:
        return
