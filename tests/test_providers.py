"""batcher.toml: found where documented, validated with the file and field named, keys read by
their variables' names (never written), shown by name and last four characters only."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from jobs.errors import ConfigError
from jobs.providers import (
    DEFAULT_PROVIDER,
    KeyRef,
    configured_providers,
    environment_provider,
    find_config,
    read_config,
)
from jobs.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batcher.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_example_is_valid() -> None:
    config = read_config(ROOT / "examples" / "batcher.toml")
    a, b = config.providers
    assert (a.name, a.keys, a.rpm) == ("relay-a", ("RELAY_A_KEY", "RELAY_A_KEY_2"), 3000)
    assert a.key_limits["RELAY_A_KEY_2"].rpm == 1000
    assert b.models == ("claude-*", "gpt-4o*")


def test_keys_come_from_the_environment_and_show_as_name_and_last_four(tmp_path: Path) -> None:
    path = write(tmp_path, '[[providers]]\nname = "a"\nbase_url = "https://a.test"\nkeys = ["K1", "K2"]\n')
    [provider] = configured_providers(path, {"K1": "sk-secret-value-abcd"})
    one, two = provider.keys
    assert one.label == "K1 …abcd" and one.present
    assert two.label == "K2 (not set)" and not two.present
    assert provider.present_keys() == [one]
    assert "sk-secret" not in repr(provider)


def test_limits_per_key_and_per_model_override_the_providers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[providers]]\nname = "a"\nbase_url = "https://a.test"\nkeys = ["K1", "K2"]\nrpm = 600\ntpm = 9000\n'
        "[providers.key_limits.K2]\nrpm = 100\n"
        '[providers.model_limits."gpt-4o"]\nrpm = 50\n',
    )
    [p] = configured_providers(path, {})
    k1, k2 = p.keys
    assert (p.limits_for(k1).rpm, p.limits_for(k2).rpm, p.limits_for(k2).tpm) == (600, 100, 9000)
    assert p.limits_for(k1, "gpt-4o").rpm == 50


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[providers]]\nname = "a"\nbase_url = "x"\nkeys = ["sk-live-123"]\n', 'provider "a": keys'),
        ('[[providers]]\nname = "a"\nbase_url = "x"\nrpm = -1\n', 'provider "a": rpm'),
        ('[[providers]]\nname = "a"\nbase_url = "x"\nkey = "K"\n', 'provider "a": key'),
        ('[[providers]]\nbase_url = "x"\n', 'provider "1": name'),
        ("providers = []\n", "providers"),
        ("[[providers]\n", "cannot read it as TOML"),
        (
            '[[providers]]\nname = "a"\nbase_url = "x"\n[[providers]]\nname = "a"\nbase_url = "y"\n',
            "share a name",
        ),
    ],
)
def test_a_bad_file_names_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        read_config(path)
    assert str(path) in str(caught.value) and message in str(caught.value)
    assert "sk-live-123" not in str(caught.value) or "never the key itself" in str(caught.value)


def test_found_where_named_else_the_working_folder_else_the_users(tmp_path: Path) -> None:
    cwd, config_home = tmp_path / "work", tmp_path / "config"
    (config_home / "batcher").mkdir(parents=True)
    cwd.mkdir()
    assert find_config(None, cwd=cwd, config_home=config_home) is None
    user = config_home / "batcher" / "batcher.toml"
    user.write_text("")
    assert find_config(None, cwd=cwd, config_home=config_home) == user
    local = cwd / "batcher.toml"
    local.write_text("")
    assert find_config(None, cwd=cwd, config_home=config_home) == local
    assert find_config(user, cwd=cwd, config_home=config_home) == user
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(tmp_path / "nope.toml", cwd=cwd, config_home=config_home)


def test_without_a_file_the_environment_is_the_one_default_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://relay.test/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key-wxyz")
    [provider] = load_settings().providers()
    assert provider.name == DEFAULT_PROVIDER and provider.source == "environment"
    assert [k.label for k in provider.keys] == ["OPENAI_API_KEY …wxyz"]
    assert environment_provider(None, None, key_env="OPENAI_API_KEY").keys == (KeyRef("OPENAI_API_KEY"),)


def test_settings_scrub_every_configured_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[[providers]]\nname = "a"\nbase_url = "https://a.test"\nkeys = ["K1"]\n')
    monkeypatch.setenv("BATCHER_CONFIG", str(path))
    monkeypatch.setenv("K1", "canary-config-key-0001")
    settings = load_settings()
    assert "canary-config-key-0001" in settings.secret_values()
    assert [p.name for p in settings.providers()] == ["a"]
    assert KeyRef("K1", SecretStr("x")) == KeyRef("K1")  # compared by name only
