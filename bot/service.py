"""The use cases behind the chat commands, shared by the Discord and Telegram adapters.

Adapters parse platform input into the argument types here, call one method, and render the typed
result. Every method raises only `bot.errors.UserFacingError` subclasses for things a user did or can fix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from bot import derived_jobs, texts
from bot.command_parser import ImagineArgs, check_args, check_job_id, check_seed
from bot.errors import InvalidRequest, NotAllowed, NothingToDo, QuotaExceeded, Unavailable
from bot.eta import StepTimes, estimate
from bot.input_images import check_input_image
from bot.moderation import Moderation, Operators, PromptSource, banned, rate_limited
from bot.request_rules import random_seed, resolve_request
from bot.settings import LimitsSettings, ModerationSettings, VariationsSettings
from bot.standing import Queued, QueueOverview
from bot.user_settings import SettingName, SettingsView, UserSettings, read_setting_name, settings_view
from engine.messages import SEED_SPACE
from engine.settings import EngineSettings
from storage.bans import Ban, BanList, UserBanned
from storage.errors import StorageBusy, StorageFull
from storage.images import ImageNotFound, ImageStore
from storage.jobs import ImageRequest, Job, JobOrigin, JobStatus, NewJob, Requester
from storage.queue import ActiveLimitReached, HourlyLimitReached, JobNotFound, JobQueue
from storage.user_settings import StoredSettings, UserSettingsStore

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BAN_REASON = 500
MAX_USER_ID_DIGITS = 20  # Discord's snowflakes and Telegram's ids are 64-bit at most


@dataclass(frozen=True, slots=True)
class Picture:
    """A finished job's stored PNG, with the file name to offer it under."""

    job: Job
    png: bytes
    filename: str
    others: tuple[Picture, ...] = ()  # a set's other images, in order (the first is this one)


class BotService:
    """Platform-neutral commands: /imagine, /reroll, vary, upscale, /history, /queue, /cancel, delete,
    details, /settings, and the operators' ban and unban."""

    def __init__(
        self,
        queue: JobQueue,
        images: ImageStore,
        limits: LimitsSettings,
        engine: EngineSettings,
        variations: VariationsSettings | None = None,
        *,
        user_settings: UserSettingsStore,
        bans: BanList,
        moderation: Moderation | None = None,
    ) -> None:
        self._queue = queue
        self._images = images
        self._limits = limits
        self._engine = engine
        self._variations = variations or VariationsSettings()
        self._user_settings = user_settings
        self._bans = bans
        self._moderation = moderation or Moderation(ModerationSettings(), Operators())

    async def imagine(
        self,
        requester: Requester,
        args: ImagineArgs,
        *,
        is_admin: bool = False,
        count: int | None = None,
        image: bytes | None = None,
        strength: float | None = None,
    ) -> Queued:
        """Fill what the flags left unset from the user's settings, check the prompt against the
        limits and the operator's word lists, fill the defaults (random seed, steps, 1024x1024), and
        enqueue one job of `count` images (--n; else the user's or the operator's default) within the
        user's quotas.

        With `image` (the file a user sent) it is an image prompt: the file is checked (type, pixel
        count, size), stored with the job and drawn at its aspect ratio unless `args` asks for a size,
        at `strength` (--strength, default `variations.image_prompt_strength`).
        """
        settings = await self._settings_of(requester)
        images = derived_jobs.check_count(
            count if count is not None else settings.image_count(self._limits), self._limits
        )
        if strength is not None:
            if image is None:
                raise InvalidRequest("--strength goes with an image: send a picture with your /imagine.")
            derived_jobs.check_strength(strength)
        typed = args.prompt
        args = settings.apply(args, self._limits)
        checked = None
        if image is not None:
            checked = await asyncio.to_thread(check_input_image, image, self._limits)
            args = derived_jobs.image_prompt_args(args, checked, self._limits)
        request = resolve_request(args, self._limits, self._engine)
        self._moderation.check(requester, typed, PromptSource.PROMPT)
        self._moderation.check(requester, settings.style_suffix, PromptSource.STYLE_SUFFIX)
        # A phrase or pattern may also span the two.
        self._moderation.check(requester, request.prompt, PromptSource.PROMPT)
        request = dataclasses.replace(request, count=images)
        if checked is not None:
            request = dataclasses.replace(
                request,
                strength=strength if strength is not None else self._variations.image_prompt_strength,
            )
        return await self._enqueue(
            NewJob(
                requester=requester,
                request=request,
                origin=JobOrigin.NEW if checked is None else JobOrigin.IMAGE_PROMPT,
                input_png=None if checked is None else checked.png,
                max_active=self._max_active(is_admin),
                max_per_hour=self._max_per_hour(is_admin),
                spoiler=self._moderation.is_spoiler(request.prompt),
                show_progress=settings.show_progress,
            )
        )

    async def vary(
        self, requester: Requester, job_id: int, image_index: int, *, strong: bool, is_admin: bool = False
    ) -> Queued:
        """Vary (Subtle or Strong) image `image_index` (0-based) of one of the user's finished jobs: the
        same prompt on that picture with a new seed. A second press while queued returns the same job."""
        source, png = await self._source(requester, job_id, image_index, "vary", is_admin=is_admin)
        new_job = derived_jobs.vary_job(
            requester,
            source,
            image_index,
            png,
            strong=strong,
            variations=self._variations,
            limits=self._limits,
        )
        return await self._enqueue_derived(requester, source, new_job, is_admin=is_admin)

    async def upscale(
        self, requester: Requester, job_id: int, image_index: int, *, is_admin: bool = False
    ) -> Queued:
        """Upscale 2x image `image_index` (0-based) of one of the user's finished jobs (capped by the size
        limits; refused when it cannot grow), refined with its own seed. A second press while queued
        returns the same job."""
        source, png = await self._source(requester, job_id, image_index, "upscale", is_admin=is_admin)
        new_job = derived_jobs.upscale_job(
            requester,
            source,
            image_index,
            png,
            variations=self._variations,
            limits=self._limits,
            engine_max_pixels=self._engine.max_pixels,
        )
        return await self._enqueue_derived(requester, source, new_job, is_admin=is_admin)

    async def _enqueue_derived(
        self, requester: Requester, source: Job, new_job: NewJob, *, is_admin: bool
    ) -> Queued:
        """A job made from another (vary, upscale), under the same rules as a typed one."""
        # The word lists may have grown since the source ran.
        self._moderation.check(requester, source.request.prompt, PromptSource.RERUN, source)
        settings = await self._settings_of(requester)
        return await self._enqueue(
            dataclasses.replace(
                new_job,
                max_active=self._max_active(is_admin),
                max_per_hour=self._max_per_hour(is_admin),
                spoiler=self._moderation.is_spoiler(new_job.request.prompt),
                show_progress=settings.show_progress,
            )
        )

    async def reroll(
        self,
        requester: Requester,
        *,
        seed: int | None = None,
        job_id: int | None = None,
        from_button: bool = False,
        is_admin: bool = False,
    ) -> Queued:
        """Run the user's last job in this chat (or `job_id`) again with a new random seed or `seed`: the
        same number of images, and a job that started from an image (image prompt, vary, upscale) starts
        from the same image at the same strength.

        from_button: dedupe by (source job, user) so a second press while queued returns the same job.
        """
        if seed is not None:
            check_seed(seed)
        source = await self._reroll_source(requester, job_id, is_admin=is_admin)
        # The word lists may have grown since the job ran, and anyone here may reroll it.
        self._moderation.check(requester, source.request.prompt, PromptSource.RERUN, source)
        # A second press finds the first press's job (even when that job fills the quota): the queue
        # looks for the key before it counts the user's active jobs.
        dedupe_key = f"reroll:{source.id}:{requester.user_id}" if from_button else None
        old = source.request
        # Limits may have tightened since the source job ran: check it as if it were typed now.
        args = check_args(
            ImagineArgs(
                prompt=old.prompt,
                negative_prompt=old.negative_prompt,
                seed=seed,
                steps=old.steps,
                width=old.width,
                height=old.height,
            ),
            self._limits,
        )
        request = ImageRequest(
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            seed=seed if seed is not None else random_seed(),
            steps=old.steps,
            width=old.width,
            height=old.height,
            guidance=old.guidance,
            count=min(old.count, self._limits.max_images),
            strength=old.strength,
        )
        input_png = await self._queue.input_image(source.id) if source.has_input_image else None
        return await self._enqueue(
            NewJob(
                requester=requester,
                request=request,
                parent_id=source.id,
                origin=JobOrigin.REROLL,
                input_png=input_png,
                dedupe_key=dedupe_key,
                max_active=self._max_active(is_admin),
                max_per_hour=self._max_per_hour(is_admin),
                spoiler=self._moderation.is_spoiler(request.prompt),
                show_progress=(await self._settings_of(requester)).show_progress,
            )
        )

    async def history(self, requester: Requester, limit: int = 10) -> Sequence[Job]:
        """The user's newest jobs on this platform, newest first."""
        return await self._queue.history(requester.platform, requester.user_id, limit)

    async def queue_overview(self, requester: Requester) -> QueueOverview:
        """What runs, how many wait, and where the user's own jobs stand."""
        running = tuple(await self._queue.running())
        queued = tuple(await self._queue.queued_in_fair_order())
        times = await self._step_times()
        now = datetime.now(UTC)
        mine: list[Queued] = []
        for job in running:
            if _owns(requester, job):
                mine.append(Queued(job, 0, 0, estimate(job, (), running, times, now=now), created=False))
        for index, job in enumerate(queued):
            if _owns(requester, job):
                ahead = queued[:index]
                eta_s = estimate(job, ahead, running, times, now=now)
                mine.append(Queued(job, index + 1, index, eta_s, created=False))
        return QueueOverview(running=running, queued_total=len(queued), mine=tuple(mine))

    async def cancel(self, requester: Requester, job_id: int | None = None, *, is_admin: bool = False) -> Job:
        """Cancel the given job, or the user's newest active job. Others' jobs need is_admin."""
        if job_id is None:
            active = await self._queue.active_jobs(requester.platform, requester.user_id)
            if not active:
                raise NothingToDo("You have no queued or running job to cancel.")
            target = active[-1]
        else:
            target = await self.job(job_id)
            if not (_owns(requester, target) or (is_admin and _same_platform(requester, target))):
                raise NotAllowed(f"Job #{job_id} is not yours; only its owner or an admin can cancel it.")
            if target.is_final:
                raise NothingToDo(f"Job #{job_id} has already {_finished_phrase(target)}; nothing to cancel.")
        try:
            cancelled = await self._queue.cancel(target.id)
        except StorageFull:
            logger.error("the database has no space left: a cancel was refused; free disk space")
            raise Unavailable(texts.STORAGE_FULL_CANCEL) from None
        except StorageBusy:
            raise Unavailable(texts.STORAGE_BUSY) from None
        if cancelled.status is not JobStatus.CANCELLED:
            # It finished between reading and cancelling: cancel leaves final jobs as they are.
            raise NothingToDo(
                f"Job #{target.id} has already {_finished_phrase(cancelled)}; nothing to cancel."
            )
        logger.info("cancelled by user=%s admin=%s job=%d", requester.user_id, is_admin, target.id)
        return cancelled

    async def job_for_owner_or_admin(self, requester: Requester, job_id: int, *, is_admin: bool) -> Job:
        """The job, if `requester` owns it or is an admin (for Delete); raises NotAllowed otherwise."""
        job = await self.job(job_id)
        if _owns(requester, job) or (is_admin and _same_platform(requester, job)):
            return job
        raise NotAllowed(f"Only the person who made job #{job_id} or an admin can do that.")

    async def job(self, job_id: int) -> Job:
        """Any job by id (for Details, Original PNG); raises NothingToDo if there is none."""
        check_job_id(job_id)
        try:
            return await self._queue.get(job_id)
        except JobNotFound:
            raise NothingToDo(f"There is no job #{job_id}.") from None

    async def show(self, requester: Requester, job_id: int, *, is_admin: bool = False) -> Job:
        """A done job whose picture the requester may see (theirs, or posted where they are), for /show."""
        job = await self.visible_job(requester, job_id, is_admin=is_admin)
        if job.status is JobStatus.DONE:
            if job.result_path is None:
                raise NothingToDo(texts.expired_text(job.id))
            return job
        if not job.status.is_final:
            raise NothingToDo(
                f"Job #{job.id} is {job.status.value}; its picture is posted here when it is done."
            )
        raise NothingToDo(f"Job #{job.id} has no picture: it has {_finished_phrase(job)}.")

    async def visible_job(self, requester: Requester, job_id: int, *, is_admin: bool = False) -> Job:
        """A job `requester` may see (for Details): one of theirs, or one posted where they are now;
        an admin sees any on their platform. Others' jobs from other chats stay invisible, so their
        prompts do not leak."""
        job = await self.job(job_id)
        if not _visible(requester, job, is_admin=is_admin):
            raise NothingToDo(f"There is no job #{job_id} here.")
        return job

    async def retry(self, requester: Requester, job_id: int, *, is_admin: bool = False) -> Queued:
        """A job again with its own seed (the Try again button under a failure); deduped per press."""
        source = await self.visible_job(requester, job_id, is_admin=is_admin)
        return await self.reroll(
            requester, seed=source.request.seed, job_id=job_id, from_button=True, is_admin=is_admin
        )

    async def original_png(self, requester: Requester, job_id: int, *, is_admin: bool = False) -> Picture:
        """The lossless PNG of a done job `requester` may see, named for saving (with the others of a
        set of several images)."""
        job = await self.visible_job(requester, job_id, is_admin=is_admin)
        if job.status is not JobStatus.DONE:
            raise NothingToDo(f"Job #{job.id} has no image.")
        pngs = await self.all_image_bytes(job)  # says so if the pictures expired
        if len(pngs) == 1:
            return Picture(job, pngs[0], f"majicbot-{job.id}-{job.request.seed}.png")
        pictures = [
            Picture(job, png, f"majicbot-{job.id}-{index + 1}-{(job.request.seed + index) % SEED_SPACE}.png")
            for index, png in enumerate(pngs)
        ]
        return dataclasses.replace(pictures[0], others=tuple(pictures[1:]))

    async def image_bytes(self, job: Job, index: int = 0) -> bytes:
        """The stored PNG of image `index` (0-based) of a done job."""
        if job.status is JobStatus.DONE and not job.images:
            raise NothingToDo(texts.expired_text(job.id))
        if not job.images:
            raise NothingToDo(f"Job #{job.id} has no picture: it is {job.status.value}.")
        if not 0 <= index < len(job.images):
            raise NothingToDo(f"Job #{job.id} has {len(job.images)} image(s); there is no image {index + 1}.")
        path = job.images[index].path
        try:
            return await self._images.read(path)
        except ImageNotFound:
            logger.warning("image missing path=%s job=%d", path, job.id)
            raise NothingToDo(
                f"The picture of job #{job.id} is no longer on the server; its Reroll button draws it "
                "again with a new seed."
            ) from None

    async def all_image_bytes(self, job: Job) -> tuple[bytes, ...]:
        """The stored PNGs of every image of a done job, in order (what delivery and /show post)."""
        return tuple([await self.image_bytes(job, index) for index in range(max(len(job.images), 1))])

    async def standing(self, job: Job) -> Queued:
        """Where `job` stands now: its queue position and ETA (position 0 once it runs)."""
        return await self._status(job, created=False)

    async def set_status_message(
        self,
        job_id: int,
        message_id: str,
        *,
        token: str | None = None,
        token_issued_at: datetime | None = None,
    ) -> None:
        """Remember the chat message that shows the job's position and progress (and, on Discord, the
        interaction token that edits it), so any chat process can still edit it, after a restart too."""
        await self._queue.set_status_message(job_id, message_id, token=token, token_issued_at=token_issued_at)

    # -- settings --------------------------------------------------------------------------------
    async def settings(self, requester: Requester) -> SettingsView:
        """The user's /settings: the text and the options, as both platforms show them."""
        await self.check_not_banned(requester)
        return self._settings_view(await self._settings_of(requester))

    async def update_settings(
        self, requester: Requester, name: SettingName | str, value: str
    ) -> SettingsView:
        """Set one setting from its text value ("default" puts it back); InvalidRequest saying how to
        write it when the value is not allowed (nothing is changed then)."""
        await self.check_not_banned(requester)
        setting = name if isinstance(name, SettingName) else read_setting_name(name)
        if setting is SettingName.STYLE:
            self._moderation.check(requester, value, PromptSource.NEW_STYLE_SUFFIX)

        def change(stored: StoredSettings) -> StoredSettings:
            current = UserSettings.from_stored(stored, self._limits)
            return current.with_value(setting, value, self._limits).to_stored()

        stored = await self._write(self._user_settings.update(requester.platform, requester.user_id, change))
        logger.info(
            "settings changed platform=%s user=%s setting=%s", requester.platform, requester.user_id, setting
        )
        return self._settings_view(UserSettings.from_stored(stored, self._limits))

    async def reset_settings(self, requester: Requester) -> SettingsView:
        """Every setting back to the operator's default."""
        await self.check_not_banned(requester)
        await self._write(self._user_settings.reset(requester.platform, requester.user_id))
        logger.info("settings reset platform=%s user=%s", requester.platform, requester.user_id)
        return self._settings_view(UserSettings())

    # -- moderation ------------------------------------------------------------------------------
    async def check_not_banned(self, requester: Requester) -> None:
        """Raise Banned (its text is the refusal) if an operator banned the user: adapters call it once
        at their entrance, before any command; enqueueing checks again in its own transaction."""
        ban = await self._bans.get(requester.platform, requester.user_id)
        if ban is not None:
            raise banned(ban)

    def is_operator(self, requester: Requester) -> bool:
        """Whether the user is in their platform's `admin_user_ids` (may ban and unban)."""
        return self._moderation.is_operator(requester)

    async def ban(self, operator: Requester, user_id: str, *, reason: str = "") -> Ban:
        """Ban a user of the operator's platform: every command of theirs is refused from now on.
        Their queued jobs stay (cancel them with /cancel <job>)."""
        target = self._check_ban_target(operator, user_id)
        reason = reason.strip()
        if len(reason) > MAX_BAN_REASON:
            raise InvalidRequest(f"The reason is {len(reason)} characters long; keep it to {MAX_BAN_REASON}.")
        if self._moderation.operators.includes(operator.platform, target):
            raise NotAllowed(
                f"User {target} is an operator (admin_user_ids in the config); remove them there first."
            )
        ban = await self._write(
            self._bans.ban(operator.platform, target, banned_by=operator.user_id, reason=reason)
        )
        logger.info("banned platform=%s user=%s by=%s", operator.platform, target, operator.user_id)
        return ban

    async def unban(self, operator: Requester, user_id: str) -> Ban:
        """Lift a ban; NothingToDo if the user was not banned."""
        target = self._check_ban_target(operator, user_id)
        ban = await self._write(self._bans.unban(operator.platform, target))
        if ban is None:
            raise NothingToDo(f"User {target} is not banned.")
        logger.info("unbanned platform=%s user=%s by=%s", operator.platform, target, operator.user_id)
        return ban

    async def bans(self, operator: Requester) -> Sequence[Ban]:
        """The bans on the operator's platform, newest first."""
        self._check_operator(operator)
        return await self._bans.all(operator.platform)

    # -- internals -----------------------------------------------------------------------------
    def _max_active(self, is_admin: bool) -> int | None:
        if is_admin and self._limits.admins_exempt_from_quota:
            return None
        return self._limits.max_active_jobs_per_user

    def _max_per_hour(self, is_admin: bool) -> int | None:
        if self._limits.jobs_per_hour == 0 or (is_admin and self._limits.admins_exempt_from_quota):
            return None
        return self._limits.jobs_per_hour

    async def _settings_of(self, requester: Requester) -> UserSettings:
        return UserSettings.from_stored(
            await self._user_settings.get(requester.platform, requester.user_id), self._limits
        )

    def _settings_view(self, settings: UserSettings) -> SettingsView:
        return settings_view(settings, self._limits, self._engine.default_steps)

    async def _write(self, write: Awaitable[T]) -> T:
        try:
            return await write
        except StorageFull:
            logger.error("the database has no space left: a settings change was refused; free disk space")
            raise Unavailable(texts.STORAGE_FULL) from None
        except StorageBusy:
            raise Unavailable(texts.STORAGE_BUSY) from None

    def _check_operator(self, operator: Requester) -> None:
        if not self._moderation.is_operator(operator):
            raise NotAllowed(
                "Only the bot's operators (admin_user_ids in its config) can ban and unban users."
            )

    def _check_ban_target(self, operator: Requester, user_id: str) -> str:
        self._check_operator(operator)
        target = user_id.strip()
        if not target.isascii() or not target.isdigit() or len(target) > MAX_USER_ID_DIGITS:
            raise InvalidRequest(f'Give the user\'s numeric id, e.g. 123456789 (got "{user_id}").')
        return target

    async def _reroll_source(self, requester: Requester, job_id: int | None, *, is_admin: bool) -> Job:
        if job_id is None:
            last = await self._queue.last_job(requester.platform, requester.chat_id, requester.user_id)
            if last is None:
                raise NothingToDo(
                    "Nothing to reroll here yet: draw something first, e.g. /imagine a lighthouse at dusk"
                )
            return last
        check_job_id(job_id)
        try:
            job = await self._queue.get(job_id)
        except JobNotFound:
            job = None
        # Anyone may reroll a job they could see (`visible_job`).
        if job is None or not _visible(requester, job, is_admin=is_admin):
            raise NothingToDo(f"There is no job #{job_id} here to reroll.")
        return job

    async def _source(
        self, requester: Requester, job_id: int, image_index: int, action: str, *, is_admin: bool
    ) -> tuple[Job, bytes]:
        """The job a Vary or Upscale (`action`) starts from, and the PNG of its image `image_index`."""
        source = await self._derive_from(requester, job_id, is_admin=is_admin)
        derived_jobs.source_image(source, image_index, action)  # why there is none, worded for `action`
        return source, await self.image_bytes(source, image_index)

    async def _derive_from(self, requester: Requester, job_id: int, *, is_admin: bool) -> Job:
        """One of the requester's jobs (or, for an admin, any on this platform); a job that no longer
        exists was deleted."""
        check_job_id(job_id)
        try:
            job = await self._queue.get(job_id)
        except JobNotFound:
            raise NothingToDo(f"Job #{job_id} was deleted; draw something new with /imagine.") from None
        if not (_owns(requester, job) or (is_admin and _same_platform(requester, job))):
            raise NotAllowed(
                f"Job #{job_id} is not yours: Vary and Upscale work on your own pictures. "
                "Its Reroll button draws the prompt for you."
            )
        return job

    async def _enqueue(self, new_job: NewJob) -> Queued:
        try:
            result = await self._queue.enqueue(new_job)
        except ActiveLimitReached as full:
            raise QuotaExceeded(texts.quota_text(full.limit, full.active)) from None
        except HourlyLimitReached as limited:
            raise rate_limited(limited.limit, limited.retry_at) from None
        except UserBanned as refused:
            raise banned(refused.ban) from None
        except StorageFull:
            logger.error("the database has no space left: a command was refused; free disk space")
            raise Unavailable(texts.STORAGE_FULL) from None
        except StorageBusy:
            logger.warning("the database stayed locked past the busy timeout: a command was refused")
            raise Unavailable(texts.STORAGE_BUSY) from None
        job = result.job
        if result.created:
            logger.info(
                "queued platform=%s user=%s parent=%s job=%d",
                job.requester.platform,
                job.requester.user_id,
                job.parent_id,
                job.id,
            )
        return await self._status(job, created=result.created)

    async def _status(self, job: Job, *, created: bool) -> Queued:
        """Position and ETA of one job as it stands now."""
        times = await self._step_times()
        now = datetime.now(UTC)
        position = await self._queue.position(job.id)
        if position is None:
            # Claimed (or even finished) since it was read: show it as it is now.
            job = await self._queue.get(job.id)
            return Queued(job, 0, 0, estimate(job, (), (), times, now=now), created)
        eta_s = estimate(job, position.jobs_ahead, position.running, times, now=now)
        return Queued(job, position.position, len(position.jobs_ahead), eta_s, created)

    async def _step_times(self) -> StepTimes:
        return StepTimes.from_jobs(await self._queue.recent_step_times())


def _same_platform(requester: Requester, job: Job) -> bool:
    return job.requester.platform == requester.platform


def _owns(requester: Requester, job: Job) -> bool:
    return _same_platform(requester, job) and job.requester.user_id == requester.user_id


def _same_place(requester: Requester, job: Job) -> bool:
    return _same_platform(requester, job) and job.requester.chat_id == requester.chat_id


def _visible(requester: Requester, job: Job, *, is_admin: bool) -> bool:
    return (
        _owns(requester, job) or _same_place(requester, job) or (is_admin and _same_platform(requester, job))
    )


def _finished_phrase(job: Job) -> str:
    phrases = {JobStatus.DONE: "finished", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "been cancelled"}
    return phrases.get(job.status, job.status.value)
