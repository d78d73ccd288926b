"""Settings: one validated object from the environment; the SDK's names and batcher's, masked key."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import ConfigError
from jobs.settings import DEFAULT_BROKER_URL, check_database_url, load_settings, masked_url


def test_defaults_derive_from_home(isolated_env: Path) -> None:
    settings = load_settings()
    assert settings.home == isolated_env
    assert settings.effective_database_url == f"sqlite:///{isolated_env / 'batcher.db'}"
    assert settings.uses_default_store
    assert settings.results_dir == isolated_env / "results"
    assert settings.effective_redis_url == settings.broker_url


def test_the_broker_default_is_the_local_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHER_BROKER_URL")
    assert load_settings().broker_url == DEFAULT_BROKER_URL


@pytest.mark.parametrize(
    ("env", "base_url", "key"),
    [
        ({"OPENAI_BASE_URL": "https://a.example/v1", "OPENAI_API_KEY": "sk-a"}, "https://a.example/v1", "sk-a"),
        (
            {"OPENAI_BASE_URL": "https://a.example/v1", "BATCHER_BASE_URL": "https://b.example/v1",
             "OPENAI_API_KEY": "sk-a", "BATCHER_API_KEY": "sk-b"},
            "https://b.example/v1", "sk-b",
        ),  # BATCHER_* wins
        ({"OPENAI_BASE_URL": ""}, None, None),
    ],
)  # fmt: skip
def test_sdk_names_and_batcher_names(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], base_url: str | None, key: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.base_url == base_url
    assert (settings.api_key.get_secret_value() if settings.api_key else None) == key
    assert settings.secret_values() == ([key] if key else [])


def test_the_key_is_masked_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123456")
    assert "sk-secret-123456" not in repr(load_settings())
    assert "sk-secret-123456" not in str(load_settings().model_dump())


def test_the_limiter_redis_may_differ_from_the_broker() -> None:
    settings = load_settings(broker_url="redis://b:6379/0", redis_url="redis://r:6379/1")
    assert settings.effective_redis_url == "redis://r:6379/1"


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("relay.example.com/v1", "must be an http(s) URL"),
        ("https://user:pw@relay.example.com/v1", "must not carry a user or password"),
        ("https://relay.example.com/v1?key=1", "must not carry a query string"),
    ],
)
def test_bad_base_urls_say_what_to_do(base_url: str, message: str) -> None:
    settings = load_settings(base_url=base_url)  # a bad URL stops only the commands that call the API
    with pytest.raises(ConfigError, match="invalid settings: OPENAI_BASE_URL") as caught:
        settings.checked_base_url()
    assert message in str(caught.value)
    assert "pw@" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("sqlite:///x.db", True),
        ("postgresql+psycopg://u@h/db", True),
        ("postgres://u@h/db", True),
        ("mysql://u@h/db", False),
        ("junk", False),
        ("oracle://h/db", False),
    ],
)
def test_check_database_url(url: str, ok: bool) -> None:
    if ok:
        check_database_url(url)
    else:
        with pytest.raises(ConfigError, match=r"sqlite:///path/to/batcher\.db or postgresql://"):
            check_database_url(url)


def test_masked_url_hides_credentials() -> None:
    assert masked_url("postgresql://u:secret@h/db") == "postgresql://***@h/db"
    assert masked_url("sqlite:///x.db") == "sqlite:///x.db"
