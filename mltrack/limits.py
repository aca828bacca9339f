"""What may reach the tracking store, and in what shape: MLflow's limits and secrets.

Every value a run logs (param, tag, text artifact) passes through here first, so the rules
live in one place (style.md, principle 4):

- nested dicts become dotted keys and values become strings;
- values of secret-looking keys (``password``, ``token``, ``api_key``, ``*_key`` ...) read
  ``<redacted>``;
- credentials inside any URI-shaped text (``postgresql://user:pass@host/db``, also inside a
  longer string such as a sweep's pass-through flags) read ``scheme://user:<redacted>@host``;
- values longer than MLflow keeps are cut with a warning.

Nothing here talks to a store: the caller's dicts are never mutated, new ones are returned.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

MAX_PARAM_VAL_LENGTH = 6000  # mlflow.utils.validation
MAX_TAG_VAL_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH
REDACTED = "<redacted>"

_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|credential|(^|[_.])key$)", re.I)
# scheme://user:password@  (the password may hold anything but '@', '/' and white space)
_URI_CREDENTIALS = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*):(?P<secret>[^@/\s]+)@")
_UNSAFE_METRIC_KEY = re.compile(r"[^\w\-. /]")


def is_secret(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_uri(text: str) -> str:
    """Hide the password of every ``scheme://user:password@`` in ``text``."""
    return _URI_CREDENTIALS.sub(rf"\g<head>:{REDACTED}@", text)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; values become strings; secrets are redacted."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif is_secret(name) and value not in (None, ""):
            out[name] = REDACTED
        else:
            out[name] = "" if value is None else redact_uri(str(value))
    return out


def cut(key: str, value: str, limit: int, kind: str) -> str:
    if len(value) <= limit:
        return value
    log.warning("%s %r is %d characters; MLflow keeps %d, cut", kind, key, len(value), limit)
    return value[: limit - 3] + "..."


def params(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: cut(k, v, MAX_PARAM_VAL_LENGTH, "param") for k, v in flatten(values).items()}


def tags(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: cut(k, v, MAX_TAG_VAL_LENGTH, "tag") for k, v in flatten(values).items()}


@contextlib.contextmanager
def redacted_stdout() -> Iterator[None]:
    """MLflow prints "View run ... at: <tracking URI>" when a run ends on a server; keep the
    link, hide the password it may carry (the tracking URI as the user wrote it)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        sys.stdout.write(redact_uri(captured.getvalue()))


def metric_key(key: str) -> str:
    """MLflow accepts letters, digits, ``_ - . / `` and space in metric names; map the rest."""
    cleaned = _UNSAFE_METRIC_KEY.sub("_", key)
    if cleaned != key:
        log.warning("metric name %r is not valid in MLflow; logged as %r", key, cleaned)
    return cleaned
