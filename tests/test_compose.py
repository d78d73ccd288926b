"""docker-compose.yml: the distributed setup is well-formed and keeps its promises.

No Docker engine runs here, so the file is checked as data, and with ``docker compose config``
(or the older ``docker-compose config``) where one is installed.
"""

from __future__ import annotations

import json
import os
import re
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
    command = [*_compose_command(), "config", "--quiet"]
    env = os.environ | {"OPENAI_BASE_URL": "https://relay.example.com/v1", "OPENAI_API_KEY": "sk-test"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _interpolated_defaults(text: str) -> dict[str, str]:
    """``${NAME:-default}`` pairs of the compose file."""
    return dict(re.findall(r"\$\{(\w+):-([^}]*)\}", text))


def test_compose_host_ports_are_offset_and_configurable() -> None:
    """A local Redis on 6379 or PostgreSQL on 5432 never clashes with the compose services."""
    services = compose()["services"]
    published = {name: services[name]["ports"][0] for name in ("redis", "postgres", "flower")}
    assert published == {
        "redis": "127.0.0.1:${BATCHER_REDIS_PORT:-16379}:6379",
        "postgres": "127.0.0.1:${BATCHER_POSTGRES_PORT:-15432}:5432",
        "flower": "127.0.0.1:${BATCHER_FLOWER_PORT:-5555}:5555",
    }


def test_compose_local_image_is_built_never_pulled() -> None:
    services = compose()["services"]
    for name in ("worker", "flower"):
        assert services[name]["image"] == "batcher-worker:latest"
        assert services[name]["build"] == "."
        assert services[name]["pull_policy"] == "build", name


def test_compose_results_are_a_bind_mount_on_the_host() -> None:
    worker = compose()["services"]["worker"]
    assert worker["volumes"] == ["${BATCHER_RESULTS_HOST_DIR:-./results}:/data/results"]
    assert worker["environment"]["BATCHER_HOME"] == "/data"  # so results land in /data/results


def test_env_example_names_every_variable_the_compose_file_reads() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    read = set(re.findall(r"\$\{(\w+)", text))
    example = (ROOT / ".env.example").read_text()
    given = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    assert given == read
    defaults = _interpolated_defaults(text)
    for line in example.splitlines():
        name, _, value = line.partition("=")
        if name in defaults:
            assert value == defaults[name], name  # the example shows the real defaults
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_readme_without_docker_steps_leave_a_running_redis_alone() -> None:
    """The steps start a Redis of their own on another port and check it answers."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Without Docker", 1)[1].split("\n### ", 1)[0]
    starts = [line for line in section.splitlines() if line.startswith("redis-server")]
    assert starts
    for line in starts:
        port = re.search(r"--port (\d+)", line)
        assert port is not None and port.group(1) != "6379", line
        assert f"redis-cli -p {port.group(1)} ping" in section
        assert f"BATCHER_BROKER_URL=redis://127.0.0.1:{port.group(1)}/0" in section


def _compose_command() -> list[str]:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed")


def test_compose_config_publishes_the_chosen_ports() -> None:
    env = os.environ | {
        "OPENAI_BASE_URL": "https://relay.example.com/v1",
        "OPENAI_API_KEY": "sk-test",
        "BATCHER_REDIS_PORT": "7001",
        "BATCHER_POSTGRES_PORT": "7002",
    }
    result = subprocess.run(
        [*_compose_command(), "config"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert "7001" in str(services["redis"]["ports"]) and "7002" in str(services["postgres"]["ports"])


def test_compose_metrics_profile_scrapes_the_workers_into_a_provisioned_dashboard() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["metrics"], name  # optional: `--profile metrics`
        assert services[name]["ports"][0].startswith("127.0.0.1:"), name
    assert services["worker"]["environment"]["BATCHER_METRICS_PORT"] == "9464"
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": 9464}
    board = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "batcher.json").read_text())
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in ("batcher_calls_total", "batcher_rate_limited_total", "batcher_tokens_total",
                   "batcher_cost_usd_total", "batcher_call_duration_seconds_bucket", "batcher_calls_in_flight",
                   "batcher_pace_requests_per_second"):  # fmt: skip
        assert metric in exprs, metric
    mounts = " ".join(services["grafana"]["volumes"])
    assert "./deploy/grafana/provisioning" in mounts and "./deploy/grafana/dashboards" in mounts


def test_compose_config_accepts_the_metrics_profile() -> None:
    command = [*_compose_command(), "--profile", "metrics", "config"]
    env = os.environ | {"OPENAI_BASE_URL": "https://relay.example.com/v1", "OPENAI_API_KEY": "sk-test"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"prometheus", "grafana", "worker"} <= set(services)
