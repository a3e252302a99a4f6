"""Running the whole application (real engine worker, real PTB client) against the Telegram emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from bot.settings import LimitsSettings
from bot.telegram.settings import TelegramSettings
from tests.support.app_harness import SMALL_LIMITS, tiny_app_config
from tests.support.telegram_emulator import Call, TelegramEmulator, TgChat, TgUser

TOKEN = "123456789:TEST-secret-token-do-not-log"

ANN = TgUser(1001, "Ann", "ann")
BOB = TgUser(1002, "Bob", "bob")
GROUP = TgChat.group(-100500)


def make_config(
    tmp_path: Path,
    emulator: TelegramEmulator,
    *,
    limits: LimitsSettings = SMALL_LIMITS,
    **telegram: Any,
) -> Config:
    return tiny_app_config(
        tmp_path,
        limits=limits,
        telegram=TelegramSettings(
            token=TOKEN,  # type: ignore[arg-type]  # pydantic turns it into a SecretStr
            base_url=emulator.base_url,
            base_file_url=emulator.base_file_url,
            **telegram,
        ),
    )


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


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emulator = await TelegramEmulator.start(TOKEN)
    try:
        yield emulator
    finally:
        await emulator.close()
