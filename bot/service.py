"""The use cases behind the chat commands, shared by the Discord and Telegram adapters.

CONTRACT (the bot-core helper implements; adapters code against these signatures). Adapters parse
platform input into the argument types here, call one method, and render the typed result. Every
method raises only `bot.errors.UserFacingError` subclasses for things a user did or can fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.command_parser import ImagineArgs
from bot.settings import LimitsSettings
from engine.settings import EngineSettings
from storage.images import ImageStore
from storage.jobs import Job, Requester
from storage.queue import JobQueue


@dataclass(frozen=True, slots=True)
class Queued:
    """A job that was just queued (or found already queued for the same button press)."""

    job: Job
    position: int  # 1 = runs next; 0 = already running
    jobs_ahead: int
    eta_s: float | None  # seconds until it should be done; None until timings are known
    created: bool


@dataclass(frozen=True, slots=True)
class QueueOverview:
    running: Sequence[Job]
    queued_total: int
    mine: Sequence[Queued]  # the asking user's active jobs with positions and ETAs


class BotService:
    """Platform-neutral commands: /imagine, /reroll, /history, /queue, /cancel, delete, details."""

    def __init__(
        self,
        queue: JobQueue,
        images: ImageStore,
        limits: LimitsSettings,
        engine: EngineSettings,
    ) -> None:
        raise NotImplementedError

    async def imagine(self, requester: Requester, args: ImagineArgs, *, is_admin: bool = False) -> Queued:
        """Validate against limits and quota, fill defaults (random seed, steps, 1024x1024), enqueue."""
        raise NotImplementedError

    async def reroll(
        self,
        requester: Requester,
        *,
        seed: int | None = None,
        job_id: int | None = None,
        from_button: bool = False,
        is_admin: bool = False,
    ) -> Queued:
        """Run the user's last job in this chat (or `job_id`) again with a new random seed or `seed`.

        from_button: dedupe by (source job, user) so a second press while queued returns the same job.
        """
        raise NotImplementedError

    async def history(self, requester: Requester, limit: int = 10) -> Sequence[Job]:
        raise NotImplementedError

    async def queue_overview(self, requester: Requester) -> QueueOverview:
        raise NotImplementedError

    async def cancel(self, requester: Requester, job_id: int | None = None, *, is_admin: bool = False) -> Job:
        """Cancel the given job, or the user's newest active job. Others' jobs need is_admin."""
        raise NotImplementedError

    async def job_for_owner_or_admin(self, requester: Requester, job_id: int, *, is_admin: bool) -> Job:
        """The job, if `requester` owns it or is an admin (for Delete); raises NotAllowed otherwise."""
        raise NotImplementedError

    async def job(self, job_id: int) -> Job:
        """Any job by id (for Details, Original PNG); raises NothingToDo if there is none."""
        raise NotImplementedError

    async def image_bytes(self, job: Job) -> bytes:
        """The stored PNG of a done job."""
        raise NotImplementedError
