"""Running the whole application (real engine worker, real PTB client) against the Telegram emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.app import Application
from bot.config import Config
from bot.settings import LimitsSettings, TelegramSettings
from engine.settings import EngineSettings
from storage.settings import StorageSettings
from tests.support.telegram_emulator import Call, TelegramEmulator

TOKEN = "123456789:TEST-secret-token-do-not-log"

SMALL_LIMITS = LimitsSettings(
    min_side=64,
    max_side=256,
    max_pixels=256 * 256,
    min_steps=1,
    max_steps=8,
    max_prompt_length=200,
    max_active_jobs_per_user=6,
)


def make_config(
    tmp_path: Path,
    emulator: TelegramEmulator,
    *,
    limits: LimitsSettings = SMALL_LIMITS,
    **telegram: Any,
) -> Config:
    return Config(
        storage=StorageSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'majicbot.db'}",
            data_dir=tmp_path / "data",
            poll_interval_s=0.2,
        ),
        engine=EngineSettings(
            backend="tests.support.tiny_backend:create_backend",
            device="cpu",
            default_steps=2,
            load_timeout_s=60,
            job_timeout_s=60,
        ),
        limits=limits,
        telegram=TelegramSettings(
            token=TOKEN,  # type: ignore[arg-type]  # pydantic turns it into a SecretStr
            base_url=emulator.base_url,
            base_file_url=emulator.base_file_url,
            **telegram,
        ),
    )


@asynccontextmanager
async def running(config: Config, *, with_engine: bool = True) -> AsyncIterator[Application]:
    """The application serving until the block ends; started before the block runs."""
    app = Application(config, with_engine=with_engine, shutdown_timeout_s=10)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        async with asyncio.timeout(60):
            await app.started()
        yield app
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


def reply_to(chat_id: int, message_id: int) -> Callable[[Call], bool]:
    """A predicate: the call replies to the user's message `message_id` in `chat_id`."""

    def matches(call: Call) -> bool:
        if call.chat_id != chat_id or "reply_parameters" not in call.params:
            return False
        return bool(call.json("reply_parameters")["message_id"] == message_id)

    return matches


async def until(condition: Callable[[], Awaitable[bool]], *, within_s: float = 15.0, what: str = "") -> None:
    """Re-check `condition` (a database read, say) every 50 ms until it holds; fail after `within_s`."""
    try:
        async with asyncio.timeout(within_s):
            # The condition is a database read that another process may change: nothing to wait on.
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not true within {within_s} s: {what or condition}") from None
