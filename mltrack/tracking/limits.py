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


# What a URI's user name or password must percent-encode: each ends the part a parser reads
# as the user information (RFC 3986 §3.2.1), so a password holding one is read as something
# else, and a half of it is shown where the URI is (a log line, an error).
_ENCODE = {"@": "%40", "/": "%2F", "?": "%3F", "#": "%23", "[": "%5B", "]": "%5D"}
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _userinfo(uri: str) -> tuple[int, int] | None:
    """Where the user information of ``scheme://userinfo@host...`` is, read as a person wrote
    it: from past "://" to the *last* "@" (a path or query seldom holds one); None without."""
    head = uri.find("://")
    at = uri.rfind("@")
    if head <= 0 or at <= head + 3 or uri[:head].lower() in ("sqlite", "file"):
        return None  # no user information: none, or a file path that may hold an "@"
    authority = re.split(r"[/?#]", uri[head + 3 :], maxsplit=1)[0]
    if "@" not in authority and re.fullmatch(r"[^:@]*(:\d*)?", authority):
        return None  # host[:port] then a path holding "@": no user information
    return head + 3, at


def _unencoded(uri: str) -> list[str]:
    """The characters of ``uri``'s user information its parser would not read as the user
    meant. SQLAlchemy's ``make_url`` (databases) reads a password up to its first "@" and takes
    any other character raw (issue 18 plants "/", "[", "]" in one), so only an "@" breaks it;
    ``urllib`` (a tracking server's http URI) ends the user information at "/", "?", "#",
    reads "[" "]" as an IPv6 host and decodes "%"."""
    span = _userinfo(uri)
    if span is None:
        return []
    info = uri[span[0] : span[1]]
    if uri.partition(":")[0].split("+")[0].lower() in _DATABASES:
        return ["@"] if "@" in info else []
    return [c for c in _ENCODE if c in info] + (["%"] if _BAD_PERCENT.search(info) else [])


def userinfo_problem(argument: str, uri: str) -> str:
    """A one-line error for a URI whose user name or password holds characters a URI must
    percent-encode ("" if none): the characters, what to write instead, the URI with the
    password hidden; never the password."""
    found = _unencoded(uri)
    if not found:
        return ""
    how = ", ".join(f"'{c}' as {_ENCODE.get(c, '%25')}" for c in found)
    return (
        f"{argument}: got {redact_uri(uri)}, expected a URI whose user name and password are "
        f"percent-encoded: write {how} (urllib.parse.quote(password, safe=''))"
    )


def _redact_one(uri: str, scheme: str) -> str:
    head = len(scheme) + 3  # past "scheme://"
    span = _userinfo(uri)
    if span is not None and _unencoded(uri) and ":" in uri[span[0] : span[1]]:
        # A password holding "@", "/" ...: a parser would read a part of it as the host;
        # hide everything a person meant as the password.
        colon = uri.index(":", span[0])
        return f"{uri[: colon + 1]}{REDACTED}{uri[span[1] :]}"
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
