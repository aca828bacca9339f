"""Store URIs as people type them: a password holding a character a URI must percent-encode is
one line naming what to encode, exit 2, and never shows the password (issue 29)."""

from __future__ import annotations

import pytest

from mltrack import cli
from mltrack.tracking.limits import redact_uri, userinfo_problem
from mltrack.tracking.uris import which_tracking_uri

# Every character that ends a URI's user information (RFC 3986 §3.2.1), and a stray "%".
UNENCODED = ["@", "/", "?", "#", "[", "]", "%zz"]


@pytest.mark.parametrize(
    ("template", "char"),
    [("http://alice:se{c}cret@127.0.0.1:5000", c) for c in UNENCODED]
    # SQLAlchemy reads a database password up to its first "@" and every other character raw.
    + [("postgresql://alice:se{c}cret@127.0.0.1:9/optuna", "@"),
       ("postgresql+psycopg://alice:se{c}cret@127.0.0.1:9/optuna", "@@")],
)  # fmt: skip
def test_an_unencoded_password_is_named_and_never_shown(template, char):
    uri = template.format(c=char)
    problem = userinfo_problem("--storage", uri)
    assert problem.startswith("--storage: got ") and "percent-encoded" in problem
    assert "cret" not in problem and "cret" not in redact_uri(uri)
    assert "<redacted>@127.0.0.1" in redact_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://alice:a%40b%2Fc@127.0.0.1/optuna",  # encoded: fine
        "sqlite:////tmp/with@sign/mlflow.db",  # a path, not a password
        "http://127.0.0.1:5000/prefix@v1",
        "http://127.0.0.1:5000",
        "postgresql://alice@127.0.0.1/db",
        # What SQLAlchemy takes raw in a database password (tests/test_server.py plants them).
        "postgresql://mltrack:k+Q/z!$&'()*,;=[]?#@127.0.0.1:5432/optuna",
    ],
)
def test_uris_without_an_unencoded_password_pass(uri):
    assert userinfo_problem("--tracking-uri", uri) == ""


def test_tracking_uri_from_flag_or_environment_is_checked(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u:p@ss@127.0.0.1/db")
    assert cli.main(["compare"]) == 2
    err = capsys.readouterr().err
    assert "MLFLOW_TRACKING_URI: got postgresql://u:<redacted>@127.0.0.1/db" in err
    assert "p@ss" not in err and "'@' as %40" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(Exception, match="--tracking-uri: got http://u:<redacted>@h"):
        which_tracking_uri("http://u:a/b@h")
