"""The platform registry: each `bot/<platform>/` folder declares itself, and a new folder is all a new
platform needs (its config section, its adapter built by `majicbot run`, its doctor check, its operators,
its jobs stored), shown with a throwaway platform written into a temporary folder on `bot`'s path."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bot
import bot.config
from bot import cli
from bot.app import Application
from bot.command_parser import ImagineArgs
from bot.config import ConfigError, compose_config, load_config, masked_dump
from bot.doctor import CheckResult, Doctor
from bot.moderation import Operators
from bot.platforms import PlatformError, PlatformSpec, discover, installed
from storage.jobs import Platform, Requester

ROOT = Path(__file__).resolve().parent.parent

ECHO_PLATFORM = '''
"""A platform that exists only in this test: everything about it is in this folder."""

from bot.platforms import PlatformSpec
from bot.settings import PlatformSettings
from bot.token_check import TokenVerdict
from storage.jobs import Platform

ECHO = Platform("echo")
BUILT = []  # (settings, frontend) for each adapter the application built


class EchoSettings(PlatformSettings):
    admin_user_ids: tuple[str, ...] = ()
    greeting: str = "hi"

    def operator_ids(self):
        return frozenset(self.admin_user_ids)


def _frontend(settings, service, limits):
    from tests.support.memory_frontend import MemoryFrontend

    frontend = MemoryFrontend(ECHO)
    BUILT.append((settings, frontend))
    return frontend


async def _check_token(settings):
    accepted = settings.token.get_secret_value() == "good-echo-token"
    return TokenVerdict(accepted, "echo bot" if accepted else "echo refused the token; check echo.token")


PLATFORM = PlatformSpec(
    name=ECHO,
    settings=EchoSettings,
    token_variable="MAJICBOT_ECHO_TOKEN",
    frontend=_frontend,
    check_token=_check_token,
    noisy_loggers=("echo.wire",),
)
'''


def _add_folder(extra: Path, name: str, platform_py: str) -> None:
    folder = extra / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("", encoding="utf-8")
    (folder / "platform.py").write_text(textwrap.dedent(platform_py), encoding="utf-8")


@pytest.fixture
def on_bot_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder that is part of the `bot` package for one test (as if its folders were in bot/)."""
    extra = tmp_path / "extra_bot"
    extra.mkdir()
    monkeypatch.setattr(bot, "__path__", [*bot.__path__, str(extra)])
    importlib.invalidate_caches()
    before = set(sys.modules)
    yield extra
    for name in set(sys.modules) - before:
        if name.startswith("bot.") and name.split(".")[1] not in {spec.name for spec in installed()}:
            del sys.modules[name]


@pytest.fixture
def echo(on_bot_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformSpec[Any]:
    """The throwaway platform installed: discovered, and the config composed with its section."""
    _add_folder(on_bot_path, "echo", ECHO_PLATFORM)
    platforms = discover()
    monkeypatch.setattr(bot.config, "Config", compose_config(platforms))
    return next(spec for spec in platforms if spec.name == "echo")


def test_the_installed_platforms_are_their_folders() -> None:
    names = [spec.name for spec in installed()]
    folders = sorted(path.parent.name for path in (ROOT / "bot").glob("*/platform.py"))
    assert names == folders == ["discord", "telegram"]
    assert [spec.token_variable for spec in installed()] == [
        "MAJICBOT_DISCORD_TOKEN",
        "MAJICBOT_TELEGRAM_TOKEN",
    ]


def test_declaring_the_platforms_loads_no_platform_library() -> None:
    """The config, the CLI and the doctor read every platform's spec; discord.py and PTB load only when
    an adapter is built."""
    code = (
        "import sys, bot.cli, bot.doctor, bot.config;"
        "bot.config.load_config(None, {'MAJICBOT_TELEGRAM_TOKEN': '1:x', 'MAJICBOT_DISCORD_TOKEN': 'y'});"
        "print(','.join(m for m in ('discord', 'telegram') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def test_a_new_folder_gets_its_config_section(
    echo: PlatformSpec[Any],
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[echo]\ngreeting = "hello"\nadmin_user_ids = ["@op"]\n', encoding="utf-8")
    config = load_config(path, {"MAJICBOT_ECHO_TOKEN": "good-echo-token"})
    section = config.section(echo)
    assert (section.greeting, section.token.get_secret_value()) == ("hello", "good-echo-token")
    assert [spec.name for spec in config.enabled_platforms()] == ["echo"]
    assert masked_dump(config)["echo"] == {
        "token": "********",
        "admin_user_ids": ["@op"],
        "greeting": "hello",
    }
    assert config.secrets() == ["good-echo-token"]
    assert Operators.from_sections(config.sections()).includes(Platform("echo"), "@op")

    path.write_text('[echo]\ncolour = "red"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.problems == [
        "echo.colour: unknown key (remove it, or check its spelling against config.example.toml)"
    ]


def test_the_cli_shows_a_new_section_masked_and_quietens_its_loggers(
    echo: PlatformSpec[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[echo]\ntoken = "good-echo-token"\n', encoding="utf-8")
    try:
        assert cli.main(["config", "check", "--config", str(path)]) == cli.EXIT_OK
        shown = json.loads(capsys.readouterr().out)
        assert shown["echo"] == {"token": "********", "admin_user_ids": [], "greeting": "hi"}
        assert logging.getLogger("echo.wire").level == logging.WARNING
    finally:
        logging.getLogger("echo.wire").setLevel(logging.NOTSET)


async def test_a_new_folder_gets_its_adapter_its_doctor_check_and_its_jobs(
    echo: PlatformSpec[Any],
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "majicbot.db"}"\n'
        f'data_dir = "{tmp_path / "data"}"\n[echo]\ngreeting = "hello"\n',
        encoding="utf-8",
    )
    config = load_config(path, {"MAJICBOT_ECHO_TOKEN": "good-echo-token"})
    assert await Doctor(config, check_engine=False).tokens() == [CheckResult("echo", True, "echo bot")]
    refused = load_config(path, {"MAJICBOT_ECHO_TOKEN": "bad-echo-token"})
    (result,) = await Doctor(refused, check_engine=False).tokens()
    assert not result.ok and "echo refused the token" in result.render()

    app = Application(config, with_engine=False)
    stop = asyncio.Event()
    running = asyncio.create_task(app.run(stop))
    try:
        async with asyncio.timeout(30):
            await app.started()
            ((settings, frontend),) = sys.modules["bot.echo.platform"].BUILT
            assert settings.greeting == "hello" and frontend.is_running
            requester = Requester(Platform("echo"), chat_id="room", user_id="ann", user_name="ann")
            queued = await app.service.imagine(requester, ImagineArgs("a fox", width=256, height=256))
            assert (await app.queue.get(queued.job.id)).requester.platform == "echo"
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await running
    assert frontend.stopped


def test_a_folder_that_declares_itself_wrongly_is_named(on_bot_path: Path) -> None:
    _add_folder(on_bot_path, "quiet", '"""No PLATFORM here."""\n')
    with pytest.raises(PlatformError, match=r"^bot\.quiet\.platform must define PLATFORM = PlatformSpec"):
        discover()


def test_a_platform_named_unlike_its_folder_is_refused(on_bot_path: Path) -> None:
    _add_folder(on_bot_path, "loud", ECHO_PLATFORM)
    with pytest.raises(PlatformError, match=r"PLATFORM\.name is 'echo'; it must be its folder's name 'loud'"):
        discover()


def test_a_folder_without_platform_py_is_not_a_platform(on_bot_path: Path) -> None:
    (on_bot_path / "helpers").mkdir()
    (on_bot_path / "helpers" / "__init__.py").write_text("", encoding="utf-8")
    assert [spec.name for spec in discover()] == ["discord", "telegram"]
