"""Running the whole application (real engine worker, real discord.py client) against the Discord emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.discord.settings import DiscordSettings
from bot.settings import LimitsSettings
from tests.support.app_harness import SMALL_LIMITS, tiny_app_config
from tests.support.discord_emulator import DiscordEmulator, Injected, RecordedCall

TOKEN = "MTIzNDU2.discord-secret-token-do-not-log"
GUILD = 500
CHANNEL = 1000


def make_config(
    tmp_path: Path,
    emulator: DiscordEmulator,
    *,
    limits: LimitsSettings = SMALL_LIMITS,
    **discord: Any,
) -> Config:
    return tiny_app_config(
        tmp_path,
        limits=limits,
        discord=DiscordSettings(
            token=emulator.token,  # type: ignore[arg-type]  # pydantic turns it into a SecretStr
            api_base_url=emulator.api_base_url,
            gateway_url=emulator.gateway_url,
            **discord,
        ),
    )


@asynccontextmanager
async def emulated() -> AsyncIterator[DiscordEmulator]:
    emulator = DiscordEmulator(token=TOKEN)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def answer_to(interaction: Injected) -> Callable[[RecordedCall], bool]:
    """A predicate: an edit of `interaction`'s (ephemeral) response."""

    def matches(call: RecordedCall) -> bool:
        return call.method == "PATCH" and call.params.get("token") == interaction.token

    return matches


def callback_of(interaction: Injected) -> Callable[[RecordedCall], bool]:
    """A predicate: the acknowledgement of `interaction`."""

    def matches(call: RecordedCall) -> bool:
        return call.route.endswith("/callback") and call.params.get("token") == interaction.token

    return matches


def channel_post(channel_id: int = CHANNEL) -> Callable[[RecordedCall], bool]:
    """A predicate: a message posted with the bot token in `channel_id` (that Discord accepted)."""

    def matches(call: RecordedCall) -> bool:
        return (
            call.route == "POST /channels/{channel}/messages"
            and call.params["channel"] == str(channel_id)
            and call.status == 200
        )

    return matches


def content(call: RecordedCall) -> str:
    assert isinstance(call.payload, dict)
    return str(call.payload.get("content") or "")
