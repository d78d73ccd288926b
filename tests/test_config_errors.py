"""Bad configuration is refused clearly, before anything is stored (issue 11, 15-17)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs import db
from jobs.db import Store
from jobs.errors import BatcherError, ConfigError, StoreError
from jobs.settings import load_settings
from tests.helpers import batch_line, invoke, write_jsonl

CHAT = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


def test_base_url_with_credentials_is_refused_before_storing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:s3cretpw@127.0.0.1:1/v1")
    monkeypatch.setenv("BATCHER_DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    src = write_jsonl(tmp_path / "in.jsonl", [batch_line("a", "/v1/chat/completions", CHAT)])
    result = invoke("run", str(src))
    assert result.exit_code == 1
    assert "user or password" in result.output and "OPENAI_API_KEY" in result.output
    assert "s3cretpw" not in result.output
    assert not (tmp_path / "c.db").exists()


def test_run_without_base_url_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHER_DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    src = write_jsonl(tmp_path / "in.jsonl", [batch_line("a", "/v1/chat/completions", CHAT)])
    result = invoke("run", str(src))
    assert result.exit_code == 1 and "OPENAI_BASE_URL" in result.output
    assert not (tmp_path / "c.db").exists()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://root:pw@127.0.0.1/db", "MySQL"),
        ("mariadb+pymysql://root@127.0.0.1/db", "MySQL"),
        ("notaurl", "not a database URL"),
        ("redis://127.0.0.1:6379/0", "sqlite:///"),
    ],
)
def test_unsupported_database_urls_are_config_errors(
    url: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        Store(url)
    assert "pw@" not in str(err.value)
    monkeypatch.setenv("BATCHER_DATABASE_URL", url)
    result = invoke("jobs")
    assert result.exit_code == 1 and says in result.output


def test_explicit_sqlite_folder_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(StoreError, match="does not exist"):
        Store(f"sqlite:///{missing / 'x.db'}")
    assert not (tmp_path / "no").exists()


def test_default_home_is_created(isolated_env: Path) -> None:
    assert not isolated_env.exists()
    with db.open_store(load_settings()) as store:
        assert Path(store.url.removeprefix("sqlite:///")).parent == isolated_env
    assert (isolated_env / "batcher.db").exists()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (a hung PostgreSQL)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_postgres_that_never_answers_times_out_naming_the_url(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT_S", 1)
    url = f"postgresql://batcher:pw@127.0.0.1:{silent_server}/jobs"
    with pytest.raises(BatcherError) as err:
        Store(url)
    message = str(err.value)
    assert f"127.0.0.1:{silent_server}/jobs" in message and "did not answer" in message
    assert ":pw@" not in message


@pytest.mark.parametrize("name", ["OPENAI_BASE_URL", "BATCHER_BASE_URL"])
def test_malformed_base_url_names_its_variable_and_spares_commands_without_calls(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(name, "relay.example.com")
    assert invoke("jobs").exit_code == 0  # listing jobs calls no API
    src = write_jsonl(tmp_path / "in.jsonl", [batch_line("a", "/v1/chat/completions", CHAT)])
    result = invoke("run", str(src))
    assert result.exit_code == 1
    assert f"{name} must be an http(s) URL like https://relay.example.com/v1" in result.output
    other = {"OPENAI_BASE_URL": "BATCHER_BASE_URL", "BATCHER_BASE_URL": "OPENAI_BASE_URL"}[name]
    assert other not in result.output.split("must be")[0]
