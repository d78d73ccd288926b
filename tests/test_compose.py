"""docker-compose.yml: the distributed setup is well-formed and keeps its promises.

No Docker engine runs here, so the file is checked as data, and with ``docker compose config``
(or the older ``docker-compose config``) where one is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_has_redis_postgres_workers_and_flower_with_healthchecks() -> None:
    services = compose()["services"]
    assert {"redis", "postgres", "worker", "flower"} <= set(services)
    for name in ("redis", "postgres", "worker"):
        assert "healthcheck" in services[name], name


def test_compose_redis_keeps_messages_and_never_evicts() -> None:
    command = " ".join(compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_compose_worker_scales_and_takes_secrets_from_env() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker  # a fixed name would forbid --scale worker=N
    env = worker["environment"]
    assert env["OPENAI_API_KEY"].startswith("${OPENAI_API_KEY")
    assert "sk-" not in (ROOT / "Dockerfile").read_text()
    assert "OPENAI_API_KEY" not in (ROOT / "Dockerfile").read_text()


def test_compose_config_accepts_the_file() -> None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose", "config", "--quiet"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose", "config", "--quiet"]
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = os.environ | {"OPENAI_BASE_URL": "https://relay.example.com/v1", "OPENAI_API_KEY": "sk-test"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
