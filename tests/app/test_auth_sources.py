"""Credentials come from exactly one place: --auth-file, QDEPLOY_AUTH, or --auth with a warning (argv shows in
`ps`); the server compares them as bytes (a non-ASCII password works) and answers 401 with no detail."""
import os

import pytest

from qdeploy.app.config import AUTH_ENV, ServeConfig, resolve_auth
from qdeploy.errors import ConfigError


def test_a_file_an_environment_variable_or_argv_with_a_warning(tmp_path):
    f = tmp_path / "auth"
    f.write_text("ann:s3cret\nignored second line\n")
    f.chmod(0o600)
    assert resolve_auth(None, f, environ={}) == ("ann:s3cret", [])
    assert resolve_auth(None, None, environ={AUTH_ENV: "bob:pw"}) == ("bob:pw", [])
    value, warnings = resolve_auth("eve:pw", None, environ={})
    assert value == "eve:pw" and "ps" in warnings[0] and "--auth-file" in warnings[0]
    assert resolve_auth(None, None, environ={}) == (None, [])


def test_a_loose_file_warns_and_bad_sources_are_one_error(tmp_path):
    f = tmp_path / "auth"
    f.write_text("ann:s3cret\n")
    f.chmod(0o644)
    assert "chmod 600" in resolve_auth(None, f, environ={})[1][0]
    with pytest.raises(ConfigError, match="given twice"):
        resolve_auth(None, f, environ={AUTH_ENV: "bob:pw"})
    with pytest.raises(ConfigError, match="not found"):
        resolve_auth(None, tmp_path / "missing", environ={})
    (tmp_path / "big").write_bytes(b"a:" + b"x" * 5000)
    with pytest.raises(ConfigError, match="over 4096 bytes"):
        resolve_auth(None, tmp_path / "big", environ={})
    for bad in ("nocolon", ":pw", "ann:", ""):
        with pytest.raises(ConfigError, match="user:password"):
            ServeConfig(auth=bad)


@pytest.mark.server
def test_the_server_takes_the_variable_and_a_non_ascii_password(monkeypatch):
    import httpx

    from test_server import start_server, stop

    monkeypatch.setenv(AUTH_ENV, "ann:päss wörd")
    proc, url = start_server()
    try:
        assert httpx.get(url + "/api/models").status_code == 401
        bad = httpx.get(url + "/api/models", auth=("ann", "päss"))
        assert bad.status_code == 401 and bad.json() == {"detail": "authentication required"}
        assert httpx.get(url + "/api/models", auth=("ann", "päss wörd")).status_code == 200
        assert httpx.post(url + "/v2/models/fp32/infer", json={}, auth=("x", "y")).status_code == 401
    finally:
        stop(proc)
    assert os.environ[AUTH_ENV]
