"""Building a `BotService` in tests: on a queue's database, with the stores the app gives it."""

from __future__ import annotations

from bot.moderation import Moderation
from bot.service import BotService
from bot.settings import LimitsSettings
from engine.settings import EngineSettings
from storage.bans import BanList
from storage.images import ImageStore
from storage.queue import JobQueue
from storage.user_settings import UserSettingsStore


def build_service(
    queue: JobQueue,
    image_store: ImageStore,
    limits: LimitsSettings | None = None,
    engine: EngineSettings | None = None,
    *,
    moderation: Moderation | None = None,
) -> BotService:
    """A service with its settings and bans stored beside the queue's jobs."""
    return BotService(
        queue,
        image_store,
        limits or LimitsSettings(),
        engine or EngineSettings(),
        user_settings=UserSettingsStore(queue.database),
        bans=BanList(queue.database),
        moderation=moderation,
    )
