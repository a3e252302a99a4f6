"""Running the whole application (real engine worker, real discord.py client) against the Discord emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.app import Application
from bot.config import Config
from bot.settings import DiscordSettings, LimitsSettings
from engine.settings import EngineSettings
from storage.settings import StorageSettings
from tests.support.discord_emulator import DiscordEmulator, Injected, RecordedCall

TOKEN = "MTIzNDU2.discord-secret-token-do-not-log"
GUILD = 500
CHANNEL = 1000

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
    emulator: DiscordEmulator,
    *,
    limits: LimitsSettings = SMALL_LIMITS,
    **discord: Any,
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


@asynccontextmanager
async def running(config: Config, *, with_engine: bool = True) -> AsyncIterator[Application]:
    """The application serving until the block ends; started (and READY on the gateway) before it runs."""
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
