"""What may reach the tracking store, and in what shape: MLflow's limits and secrets.

Every value a run logs (param, tag, text artifact) passes through here first, so the rules
live in one place (style.md, principle 4):

- nested dicts become dotted keys and values become strings;
- values of secret-looking keys (``password``, ``token``, ``api_key``, ``*_key`` ...) read
  ``<redacted>``;
- credentials inside any URI-shaped text (``postgresql://user:pass@host/db``, also inside a
  longer string such as a sweep's pass-through flags) read ``scheme://user:<redacted>@host``,
  the password found by the parser that reads the URI (SQLAlchemy's ``make_url`` for a
  database, ``urllib.parse`` for the rest), so whatever it accepts (``/``, ``:``, ``+`` ...)
  is hidden;
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
# A URI-shaped word of a longer text (it ends at white space, as a URI on a command line does).
_URI = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*)://\S+")
# SQLAlchemy's database dialects: their URLs are read by make_url, not by a generic URL parser.
_DATABASES = {
    *("postgresql", "postgres", "mysql", "mariadb", "sqlite", "mssql", "oracle"),
    *("cockroachdb", "redshift", "snowflake", "trino", "duckdb", "clickhouse"),
}
_UNSAFE_METRIC_KEY = re.compile(r"[^\w\-. /]")


def is_secret(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_uri(text: str) -> str:
    """Hide the password of every ``scheme://user:password@...`` in ``text``: the characters
    the URI's own parser reads as the password become ``<redacted>``."""
    return _URI.sub(lambda m: _redact_one(m.group(0), m.group("scheme")), text)


def _redact_one(uri: str, scheme: str) -> str:
    head = len(scheme) + 3  # past "scheme://"
    if scheme.split("+")[0].lower() in _DATABASES:
        # make_url: user "[^:/]*", ":", password "[^@]*", "@", host... (sqlalchemy.engine.url)
        try:
            from sqlalchemy.engine import make_url

            password = make_url(uri).password
        except Exception:  # not a URL SQLAlchemy reads: no connection would take it either
            password = None
        if password is None:
            return uri
        colon = uri.index(":", head)
        return f"{uri[: colon + 1]}{REDACTED}{uri[uri.index('@', colon) :]}"
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if password is None:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return uri.replace(parts.netloc, f"{user}:{REDACTED}@{host}", 1)


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
