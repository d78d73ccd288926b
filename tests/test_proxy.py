"""Proxies: the pure decision (table tests), and calls through a real loopback forward proxy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from jobs.settings import load_settings
from tests.helpers import batch_line, invoke, read_jsonl, write_jsonl
from workers.client import client_config
from workers.proxy import bypassed, is_loopback, proxy_for

P = "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("base_url", "explicit", "env", "expected"),
    [
        ("https://relay.example.com/v1", None, {}, None),
        ("https://relay.example.com/v1", None, {"HTTPS_PROXY": P}, P),
        ("https://relay.example.com/v1", None, {"https_proxy": P}, P),
        ("https://relay.example.com/v1", None, {"HTTP_PROXY": P}, None),  # by the scheme
        ("http://relay.example.com/v1", None, {"HTTP_PROXY": P}, P),
        ("https://relay.example.com/v1", None, {"ALL_PROXY": P}, P),
        ("https://relay.example.com/v1", None, {"HTTPS_PROXY": P, "NO_PROXY": "example.com"}, None),
        ("https://relay.example.com/v1", None, {"HTTPS_PROXY": P, "NO_PROXY": ".example.com"}, None),
        ("https://relay.example.com/v1", None, {"HTTPS_PROXY": P, "NO_PROXY": "other.com"}, P),
        ("https://relay.example.com/v1", None, {"HTTPS_PROXY": P, "NO_PROXY": "*"}, None),
        ("https://10.1.2.3/v1", None, {"HTTPS_PROXY": P, "NO_PROXY": "10.0.0.0/8"}, None),
        ("http://127.0.0.1:8765/v1", None, {"HTTP_PROXY": P}, None),  # loopback: never from env
        ("http://localhost:8765/v1", None, {"ALL_PROXY": P}, None),
        ("http://[::1]:8765/v1", None, {"HTTP_PROXY": P}, None),
        ("http://127.0.0.1:8765/v1", "http://127.0.0.1:9", {}, "http://127.0.0.1:9"),  # asked for
        ("https://relay.example.com/v1", "none", {"HTTPS_PROXY": P}, None),
        ("https://relay.example.com/v1", "http://other:1", {"HTTPS_PROXY": P}, "http://other:1"),
    ],
)
def test_proxy_for(base_url: str, explicit: str | None, env: dict[str, str], expected: str | None) -> None:
    assert proxy_for(base_url, explicit=explicit, env=env) == expected


@pytest.mark.parametrize(
    ("host", "no_proxy", "expected"),
    [
        ("api.example.com", "example.com", True),
        ("example.com", "example.com:443", True),
        ("badexample.com", "example.com", False),
        ("a.b.example.com", "*.example.com", True),
        ("10.0.0.5", "10.0.0.0/24, foo", True),
        ("10.0.1.5", "10.0.0.0/24", False),
        ("host", " ,", False),
    ],
)
def test_bypassed(host: str, no_proxy: str, expected: bool) -> None:
    assert bypassed(host, no_proxy) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True), ("localhost", True), ("10.0.0.1", False)],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_settings_read_proxy_variables_and_redact_their_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://relay.example.com/v1")
    monkeypatch.setenv("https_proxy", "http://user:hunter2-secret@proxy.corp:3128")
    settings = load_settings()
    assert client_config(settings).proxy == "http://user:hunter2-secret@proxy.corp:3128"
    assert "hunter2-secret" in settings.secret_values()
    assert "hunter2" not in repr(client_config(settings))


def test_bad_batcher_proxy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHER_PROXY", "proxy.corp:3128")
    result = invoke("jobs")
    assert result.exit_code == 1
    assert "proxy" in result.stderr and "http://proxy.example.com:3128" in result.stderr


class ForwardProxy(ThreadingHTTPServer):
    """A plain-HTTP forward proxy on loopback that counts what it forwards."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.forwarded: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: ForwardProxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.forwarded.append(self.path)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection")}
        upstream = httpx.post(self.path, content=body, headers=headers)
        self.send_response(upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _chat_file(tmp_path: Path) -> Path:
    rows = [
        batch_line(
            f"c{i}", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
        for i in range(3)
    ]
    return write_jsonl(tmp_path / "in.jsonl", rows)


def test_run_goes_through_the_proxy_it_is_given(env: str, proxy: ForwardProxy, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke("--proxy", proxy.url, "run", str(_chat_file(tmp_path)), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert len(proxy.forwarded) == 3
    assert all(p.endswith("/v1/chat/completions") for p in proxy.forwarded)
    assert [r["error"] for r in read_jsonl(out)] == [None] * 3


def test_environment_proxy_never_takes_loopback_calls(
    env: str, proxy: ForwardProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    result = invoke("run", str(_chat_file(tmp_path)), "-o", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 0, result.stderr
    assert proxy.forwarded == []
