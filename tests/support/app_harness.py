"""Running the whole application in end-to-end tests: a config with the database and data folder in
tmp_path, the tiny CPU backend, small limits so that images take milliseconds and fast polling; and the
application serving in a task for the length of a block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.app import Application
from bot.config import Config
from bot.settings import LimitsSettings
from engine.settings import EngineSettings
from storage.settings import StorageSettings

TINY_BACKEND = "tests.support.tiny_backend:create_backend"

SMALL_LIMITS = LimitsSettings(
    min_side=64,
    max_side=256,
    max_pixels=256 * 256,
    min_steps=1,
    max_steps=8,
    max_prompt_length=200,
    max_active_jobs_per_user=6,
)


def tiny_app_config(
    tmp_path: Path, *, limits: LimitsSettings = SMALL_LIMITS, backend: str = TINY_BACKEND, **sections: Any
) -> Config:
    """A whole config for tests; `sections` adds e.g. telegram=TelegramSettings(...)."""
    return Config(
        storage=StorageSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'majicbot.db'}",
            data_dir=tmp_path / "data",
            poll_interval_s=0.2,
        ),
        engine=EngineSettings(
            backend=backend,
            device="cpu",
            model_dir=tmp_path / "models",
            default_steps=2,
            load_timeout_s=60,
            job_timeout_s=60,
        ),
        limits=limits,
        **sections,
    )


@asynccontextmanager
async def running(config: Config, *, with_engine: bool = True) -> AsyncIterator[Application]:
    """The application serving until the block ends; started (adapters connected) before it runs."""
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
