"""The `majicbot` command, run as a real subprocess the way an operator runs it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def majicbot(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAJICBOT_")}
    environment["PYTHONPATH"] = str(ROOT)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_config_check_prints_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[telegram]\ntoken = "123456:SECRET-from-file"\n', encoding="utf-8")
    result = majicbot("config", "check", cwd=tmp_path, env={"MAJICBOT_DISCORD_TOKEN": "discord-SECRET-env"})
    assert result.returncode == 0, result.stderr
    assert '"token": "********"' in result.stdout
    assert "SECRET" not in result.stdout + result.stderr
    assert '"default_steps": 20' in result.stdout


def test_config_check_reports_key_value_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("[engine]\ndefault_steps = 0\nbogus = 1\n", encoding="utf-8")
    result = majicbot("config", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "engine.default_steps: 0 is below the minimum 1" in result.stderr
    assert "engine.bogus: unknown key" in result.stderr


def test_config_path_from_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[engine]\ndefault_steps = 9\n", encoding="utf-8")
    result = majicbot("config", "check", cwd=tmp_path, env={"MAJICBOT_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert '"default_steps": 9' in result.stdout


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    db = tmp_path / "state" / "jobs.db"
    (tmp_path / "config.toml").write_text(
        f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{db}"\n', encoding="utf-8"
    )
    for _ in range(2):  # the second run is a no-op
        result = majicbot("db", "upgrade", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
        assert connection.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert {"jobs", "alembic_version"} <= tables


def test_models_check_says_what_is_missing_and_how_to_fix_it(tmp_path: Path) -> None:
    result = majicbot("models", "check", cwd=tmp_path)
    assert result.returncode == 1
    assert "majicflus_v134.safetensors" in result.stdout
    assert "majicbot download" in result.stdout


def test_run_without_any_chat_adapter_refuses(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[engine]\nbackend = "tests.support.tiny_backend:create_backend"\ndevice = "cpu"\n', encoding="utf-8"
    )
    result = majicbot("run", cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "no chat adapter is configured" in result.stderr


@pytest.mark.timeout(180)
def test_generate_writes_a_png_with_metadata(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[engine]\nbackend = "tests.support.tiny_backend:create_backend"\ndevice = "cpu"\n'
        "[limits]\nmin_side = 64\n",
        encoding="utf-8",
    )
    out = tmp_path / "fox.png"
    args = (
        "generate",
        "a red fox",
        "--seed",
        "42",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        str(out),
    )
    result = majicbot(*args, cwd=tmp_path, timeout=150)
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (64, 64)
        assert image.info.get("prompt") == "a red fox"
        assert image.info.get("seed") == "42"
    first = out.read_bytes()
    again = majicbot(*args, cwd=tmp_path, timeout=150)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == first  # same request and seed, same pixels


def test_generate_rejects_bad_input_with_a_clear_message(tmp_path: Path) -> None:
    result = majicbot("generate", "a fox", "--width", "1000", "--height", "1024", cwd=tmp_path)
    assert result.returncode == 1
    assert "16" in result.stderr
