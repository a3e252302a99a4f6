"""No traceback for an expected failure, for every command: one line saying what is wrong and what to
do (`--log-level DEBUG` adds the traceback). Real subprocesses, real broken databases."""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import assert_friendly, majicbot
from tests.support.telegram_emulator import TelegramEmulator

TINY_ENGINE = '[engine]\nbackend = "tests.support.tiny_backend:create_backend"\ndevice = "cpu"\n'
# A token so that `run` gets past "no chat adapter"; the database fails before any adapter starts.
TELEGRAM = '[telegram]\ntoken = "123456:not-a-real-token"\nbase_url = "http://127.0.0.1:9/bot"\n'


def _config(tmp_path: Path, database: str, extra: str = "") -> None:
    (tmp_path / "config.toml").write_text(
        f'[storage]\ndatabase_url = "{database}"\nbusy_timeout_ms = 200\n{extra}', encoding="utf-8"
    )


def _sqlite(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _migrated(tmp_path: Path) -> Path:
    path = tmp_path / "majicbot.db"
    _config(tmp_path, _sqlite(path))
    assert majicbot("db", "upgrade", cwd=tmp_path).returncode == 0
    return path


def _blocked(tmp_path: Path, module: str) -> Path:
    """A folder that, first on PYTHONPATH, makes `module` look not installed."""
    folder = tmp_path / "blocked" / module
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n", encoding="utf-8"
    )
    return folder.parent


@pytest.mark.parametrize("command", [("db", "upgrade"), ("engine",), ("run",)])
def test_a_file_that_is_not_a_database(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "majicbot.db").write_bytes(b"this is not a database, just some text " * 100)
    _config(tmp_path, _sqlite(tmp_path / "majicbot.db"), TINY_ENGINE + TELEGRAM)
    assert_friendly(majicbot(*command, cwd=tmp_path, timeout=60), "is damaged or is not a SQLite database")


def test_a_truncated_database(tmp_path: Path) -> None:
    path = _migrated(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_friendly(majicbot("db", "upgrade", cwd=tmp_path), "is damaged", "backup")


@pytest.fixture
def locked_database(tmp_path: Path) -> Iterator[Path]:
    path = _migrated(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield path
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize("command", [("db", "upgrade"), ("engine",)])
def test_a_locked_database(tmp_path: Path, locked_database: Path, command: tuple[str, ...]) -> None:
    _config(tmp_path, _sqlite(locked_database), TINY_ENGINE)
    assert_friendly(majicbot(*command, cwd=tmp_path, timeout=60), "is locked by another process")


def test_a_path_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    _config(tmp_path, _sqlite(tmp_path / "afile" / "majicbot.db"))
    assert_friendly(majicbot("db", "upgrade", cwd=tmp_path), "cannot create", "storage.database_url")


def test_postgres_without_asyncpg_says_which_extra(tmp_path: Path) -> None:
    _config(tmp_path, "postgresql+asyncpg://majicbot@127.0.0.1:5432/majicbot")
    result = majicbot("db", "upgrade", cwd=tmp_path, python_path=[_blocked(tmp_path, "asyncpg")])
    assert_friendly(result, "pip install 'majicbot[postgres]'")


@pytest.mark.skipif(importlib.util.find_spec("asyncpg") is None, reason="needs the postgres extra")
@pytest.mark.parametrize("command", [("db", "upgrade"), ("run", "--no-engine")])
def test_postgres_connection_refused(tmp_path: Path, command: tuple[str, ...]) -> None:
    _config(tmp_path, "postgresql+asyncpg://majicbot:hunter2@127.0.0.1:9/majicbot", TELEGRAM)
    result = majicbot(*command, cwd=tmp_path, timeout=60)
    assert_friendly(result, "connection refused", "Start the database server")
    assert "hunter2" not in result.stderr  # the password is masked


def test_an_unknown_database_url(tmp_path: Path) -> None:
    _config(tmp_path, "mysql://x")
    assert_friendly(majicbot("db", "upgrade", cwd=tmp_path), "write sqlite+aiosqlite")


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "majicbot.db").write_bytes(b"garbage" * 1000)
    _config(tmp_path, _sqlite(tmp_path / "majicbot.db"))
    result = majicbot("db", "upgrade", "--log-level", "DEBUG", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "is damaged or is not a SQLite database" in result.stderr


def test_engine_without_model_files(tmp_path: Path) -> None:
    _migrated(tmp_path)
    assert_friendly(majicbot("engine", cwd=tmp_path, timeout=60), "majicbot download")


@pytest.mark.parametrize(
    "command", [("config", "check"), ("run",), ("engine",), ("generate", "a fox"), ("download",), ("doctor",)]
)
def test_a_broken_config_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "config.toml").write_text("[engine\nbackend = 1\n", encoding="utf-8")
    result = majicbot(*command, cwd=tmp_path)
    assert result.returncode == 2
    assert_friendly(result, "not valid TOML")


def test_a_missing_config_file_that_was_asked_for(tmp_path: Path) -> None:
    result = majicbot("models", "check", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert_friendly(result, "file not found", "config.example.toml")


def test_metrics_without_prometheus_client(tmp_path: Path) -> None:
    _config(
        tmp_path, _sqlite(tmp_path / "majicbot.db"), TINY_ENGINE + "[metrics]\nenabled = true\nport = 0\n"
    )
    result = majicbot("engine", cwd=tmp_path, python_path=[_blocked(tmp_path, "prometheus_client")])
    assert_friendly(result, "pip install 'majicbot[metrics]'")


def test_models_check_on_a_file_instead_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("x", encoding="utf-8")
    (tmp_path / "config.toml").write_text('[engine]\nmodel_dir = "models"\n', encoding="utf-8")
    result = majicbot("models", "check", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "majicbot download" in result.stdout


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("majicbot")
    if not script.exists():
        pytest.skip("majicbot is not installed in this environment (run from a checkout)")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("majicbot ")


async def test_a_token_the_platform_refuses(tmp_path: Path, emulator: TelegramEmulator) -> None:
    (tmp_path / "config.toml").write_text(
        TINY_ENGINE + f'[telegram]\ntoken = "123:refused-token"\nbase_url = "{emulator.base_url}"\n',
        encoding="utf-8",
    )
    result = await asyncio.to_thread(majicbot, "run", cwd=tmp_path, timeout=90)
    assert_friendly(result, "Telegram rejected the bot token")
    assert "refused-token" not in result.stderr
