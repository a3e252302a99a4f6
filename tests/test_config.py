"""Configuration: loading, environment secrets, error messages, masking, and the example file."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.config import Config, ConfigError, load_config, masked_dump

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return caught.value.problems


def test_defaults_when_no_file_and_none_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {})
    assert config == Config()
    assert config.enabled_platforms() == ()


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    assert _problems(tmp_path / "nope.toml") == [
        "file not found; copy config.example.toml to config.toml and edit it"
    ]


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "[engine]\ndefault_steps = 7\n")
    assert load_config(None, {"MAJICBOT_CONFIG": str(path)}).engine.default_steps == 7


def test_value_below_minimum_names_key_value_and_bound(tmp_path: Path) -> None:
    path = _write(tmp_path, "[engine]\ndefault_steps = 0\n")
    assert _problems(path) == ["engine.default_steps: 0 is below the minimum 1"]


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "[engine]\ndefault_stepz = 3\n[discrod]\ntoken = 'x'\n")
    problems = _problems(path)
    assert any(line.startswith("engine.default_stepz: unknown key") for line in problems)
    assert any(line.startswith("discrod: unknown key") for line in problems)


def test_wrong_type_and_choice(tmp_path: Path) -> None:
    path = _write(tmp_path, '[limits]\nmax_steps = "many"\n[telegram]\nmode = "carrier-pigeon"\n')
    problems = _problems(path)
    assert any(line.startswith("limits.max_steps:") and "'many'" in line for line in problems)
    assert any(line.startswith("telegram.mode: 'carrier-pigeon' is not one of") for line in problems)


def test_cross_field_rule(tmp_path: Path) -> None:
    path = _write(tmp_path, "[limits]\nmin_side = 1024\nmax_side = 512\n")
    assert _problems(path) == ["limits: min_side 1024 is above max_side 512"]


def test_invalid_toml(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, "[engine\n"))
    assert problems[0].startswith("not valid TOML:")


def test_tokens_from_environment_override_file_and_are_masked(tmp_path: Path) -> None:
    path = _write(tmp_path, '[telegram]\ntoken = "from-file-123"\n')
    config = load_config(
        path, {"MAJICBOT_TELEGRAM_TOKEN": "from-env-456", "MAJICBOT_DISCORD_TOKEN": "dsc-789"}
    )
    assert config.telegram.token is not None
    assert config.telegram.token.get_secret_value() == "from-env-456"
    assert [platform.name for platform in config.enabled_platforms()] == ["discord", "telegram"]
    dumped = repr(masked_dump(config))
    assert "from-env-456" not in dumped and "dsc-789" not in dumped
    assert masked_dump(config)["telegram"]["token"] == "********"


def _leaf_keys(model: BaseModel, prefix: str = "") -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _leaf_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_example_file_is_valid_and_documents_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    assert Config.model_validate(tomllib.loads(text)) is not None
    documented: set[str] = set()
    section = None
    for line in text.splitlines():
        header = re.match(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"#? ?(\w+) = ", line)
        if key and section:
            documented.add(f"{section}.{key.group(1)}")
    assert set(_leaf_keys(Config())) - documented == set()
