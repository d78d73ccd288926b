"""Settings: one validated object built from the environment, passed down, never global.

Names every part of batcher agrees on:

- ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (the OpenAI SDK's own names), or ``BATCHER_BASE_URL`` /
  ``BATCHER_API_KEY``, which win when both are set;
- ``BATCHER_DATABASE_URL``: the SQL store; default a SQLite file under ``BATCHER_HOME``;
- ``BATCHER_BROKER_URL``: the Celery broker; default ``redis://127.0.0.1:6379/0``;
- ``BATCHER_REDIS_URL``: the shared rate limiter's Redis; defaults to the broker's URL;
- ``BATCHER_HOME``: where the default database and the speech results live
  (default ``~/.local/share/batcher``).

The API key is a ``SecretStr``: its ``repr`` and ``str`` are masked, so it cannot reach a log by
accident. Settings are built by ``load_settings()`` at start-up, not at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.errors import ConfigError

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"


def default_home() -> Path:
    """The folder for the default SQLite file and speech results."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "batcher"


class Settings(BaseSettings):
    """Everything batcher reads from the environment, validated once."""

    model_config = SettingsConfigDict(env_prefix="BATCHER_", extra="ignore", populate_by_name=True)

    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BATCHER_BASE_URL", "OPENAI_BASE_URL")
    )
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BATCHER_API_KEY", "OPENAI_API_KEY")
    )
    home: Path = Field(default_factory=default_home)
    database_url: str | None = None
    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http(s) URL like https://relay.example.com/v1 (got {value!r})")
        if parts.query or parts.fragment:
            raise ValueError(f"must not carry a query string or fragment (got {value!r})")
        return value

    @property
    def effective_database_url(self) -> str:
        """The store URL: ``BATCHER_DATABASE_URL`` or the default SQLite file."""
        return self.database_url or f"sqlite:///{self.home / 'batcher.db'}"

    @property
    def effective_redis_url(self) -> str:
        """The limiter's Redis: ``BATCHER_REDIS_URL`` or the broker's URL."""
        return self.redis_url or self.broker_url

    @property
    def results_dir(self) -> Path:
        """Where binary results (speech audio) are written."""
        return self.home / "results"

    def secret_values(self) -> list[str]:
        """The secrets to scrub from anything batcher writes."""
        return [self.api_key.get_secret_value()] if self.api_key else []


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (and explicit overrides), or say what is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {details}") from None
