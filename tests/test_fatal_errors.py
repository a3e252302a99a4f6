"""A fatal platform error ends `majicbot run` with one clear line and a non-zero exit, so a service
manager restarts it; transient errors never do. Real `majicbot run --no-engine` processes against the
emulators on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.app import Application, ApplicationError
from tests.support import discord_harness
from tests.support.telegram_emulator import TelegramEmulator, TgChat
from tests.support.telegram_harness import ANN, TOKEN, reply_to

ROOT = Path(__file__).resolve().parent.parent
START_S = 60.0
EXIT_S = 40.0

pytestmark = pytest.mark.timeout(180)


@asynccontextmanager
async def majicbot_run(
    tmp_path: Path, sections: str, env: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    config = tmp_path / "config.toml"
    config.write_text(
        "[storage]\n"
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "majicbot.db"}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        "poll_interval_s = 0.2\n" + sections,
        encoding="utf-8",
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MAJICBOT_")}
    environment.update(env, PYTHONPATH=str(ROOT))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        "--no-engine",
        "--config",
        str(config),
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def exit_of(process: asyncio.subprocess.Process) -> tuple[int, list[str]]:
    """The exit status and stderr lines, once the process ends (bounded)."""
    assert process.stderr is not None
    async with asyncio.timeout(EXIT_S):
        err = (await process.stderr.read()).decode()
        code = await process.wait()
    return code, [line for line in err.splitlines() if line.strip()]


async def test_telegram_survives_5xx_and_exits_when_the_token_is_revoked(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    sections = f'[telegram]\nbase_url = "{emulator.base_url}"\nbase_file_url = "{emulator.base_file_url}"\n'
    chat = TgChat.private(ANN)
    async with majicbot_run(tmp_path, sections, {"MAJICBOT_TELEGRAM_TOKEN": TOKEN}) as process:
        await emulator.wait_polling(within_s=START_S)
        # Transient: Telegram answers 502 twice; PTB retries, the bot keeps answering.
        emulator.break_next("getUpdates", 2)
        await emulator.end_long_polls()
        message_id = await emulator.send_text(ANN, chat, "/help")
        await emulator.wait_for("sendMessage", reply_to(chat.id, message_id), within_s=30)
        assert process.returncode is None
        assert len([call for call in emulator.calls if call.status == 502]) == 2

        emulator.revoke_token()
        await emulator.end_long_polls()
        code, lines = await exit_of(process)
    assert code != 0
    assert "rejected the bot token" in lines[-1] and "MAJICBOT_TELEGRAM_TOKEN" in lines[-1], lines[-5:]
    assert TOKEN not in "\n".join(lines)


async def test_discord_exits_when_the_token_is_revoked(tmp_path: Path) -> None:
    async with discord_harness.emulated() as emulator:
        sections = (
            f'[discord]\napi_base_url = "{emulator.api_base_url}"\ngateway_url = "{emulator.gateway_url}"\n'
        )
        async with majicbot_run(tmp_path, sections, {"MAJICBOT_DISCORD_TOKEN": emulator.token}) as process:
            await emulator.wait_connected(START_S)
            interaction = await emulator.inject_slash("queue", user_id=42)
            await emulator.wait_for_call(discord_harness.answer_to(interaction), within=30)
            await emulator.revoke_token()
            code, lines = await exit_of(process)
    assert code != 0
    assert "authentication failed (4004)" in lines[-1] and "MAJICBOT_DISCORD_TOKEN" in lines[-1], lines[-5:]


async def test_discord_refusing_the_token_when_posting_ends_the_application(tmp_path: Path) -> None:
    async with discord_harness.emulated() as emulator:
        app = Application(discord_harness.make_config(tmp_path, emulator), shutdown_timeout_s=10)
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop))
        try:
            async with asyncio.timeout(60):
                await app.started()
            emulator.token = "reset." + emulator.token  # REST answers 401; the gateway session lives on
            interaction = await emulator.inject_slash("imagine", {"prompt": "a cat --ar 1:1"}, user_id=42)
            await emulator.wait_for_call(discord_harness.callback_of(interaction), within=10)
            with pytest.raises(ApplicationError, match=r"refused the bot token \(401"):
                async with asyncio.timeout(60):
                    await task
        finally:
            stop.set()
            if not task.done():
                async with asyncio.timeout(30):
                    await asyncio.gather(task, return_exceptions=True)
