"""batcher.dashboard.guard and serve: loopback by default, a token beyond it, CSRF on changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from batcher.dashboard.app import build_app
from batcher.dashboard.guard import COOKIE, Access, is_loopback
from batcher.dashboard.serve import binding
from jobs.db import Store
from jobs.errors import ConfigError
from jobs.settings import load_settings

TOKEN = "t" * 24


def client(tmp_path: Path, access: Access, host: str = "127.0.0.1") -> TestClient:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    return TestClient(build_app(store, load_settings(), access), base_url=f"http://{host}:8770")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("10.1.2.3", False), ("evil.example", False), ("", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_binding_beyond_loopback_generates_a_token() -> None:
    bound = binding("0.0.0.0", 8770, None)
    assert bound.generated and bound.access.token
    assert bound.url == f"http://0.0.0.0:8770/?token={bound.access.token}"
    assert binding("127.0.0.1", 8770, None).access.token is None
    assert binding("0.0.0.0", 8770, TOKEN).access.token == TOKEN


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        binding("0.0.0.0", 8770, "short")


def test_loopback_refuses_another_host_name(tmp_path: Path) -> None:
    """A page elsewhere rebinding its name to 127.0.0.1 reaches the server with its own Host."""
    assert client(tmp_path, Access(None)).get("/").status_code == 200
    assert client(tmp_path, Access(None), host="evil.example").get("/").status_code == 403


def test_with_a_token_every_request_needs_it(tmp_path: Path) -> None:
    web = client(tmp_path, Access(TOKEN), host="10.0.0.5")
    for url in ("/", "/api/jobs", "/usage", "/static/dashboard.js"):
        answer = web.get(url)
        assert answer.status_code == 401, url
        assert "token" in answer.text
    assert web.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_token_in_the_address_becomes_a_strict_cookie(tmp_path: Path) -> None:
    web = client(tmp_path, Access(TOKEN), host="10.0.0.5")
    answer = web.get(f"/usage?token={TOKEN}&x=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/usage?x=1"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN}") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    web.cookies.set(COOKIE, TOKEN)
    assert web.get("/usage").status_code == 200


def test_changes_need_the_csrf_token(tmp_path: Path) -> None:
    access = Access(None)
    web = client(tmp_path, access)
    assert web.post("/api/jobs/1/pause").status_code == 403
    assert web.post("/api/jobs/1/pause", headers={"X-CSRF-Token": "guess"}).status_code == 403
    answer = web.post("/api/jobs/1/pause", headers={"X-CSRF-Token": access.csrf})
    assert answer.status_code == 404  # past the guard: there is no job 1
    assert access.csrf in web.get("/").text  # the page carries it for its buttons
