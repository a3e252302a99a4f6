"""How a job's life looks on Discord: an ephemeral status line, then the image as a channel message.

The status line is the deferred interaction response, edited at most once per
`progress_edit_interval_s` (the last text waiting in between is sent when the interval ends; unchanged
text is never re-sent). The interaction token and the status message's id are stored in the job row
after the first edit, so another chat process, or this one after a restart, keeps editing the line (as
a webhook message) for as long as the token lives: 15 minutes, after which the status line simply stops
changing. The result itself is posted with the bot token as an ordinary message in the channel (or DM),
which works however long the queue.
"""

from __future__ import annotations

import io
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot import texts
from bot.discord.buttons import components
from bot.discord.sealed_token import seal, unseal
from bot.image_fallback import Upload, fit_upload
from bot.job_view import ButtonAction, ButtonSpec, JobView, build_view
from bot.service import BotService
from bot.standing import Queued
from bot.status_throttle import StatusThrottle
from storage.jobs import Job, Platform

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# Discord refuses edits through an interaction token 15 minutes after the interaction; stop a little
# earlier so a slow edit never lands on a dead token.
TOKEN_LIFETIME_S = 14.5 * 60
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
_REMEMBERED_FINALS = 1000


@dataclass(slots=True)
class _StatusLine:
    """One job's deferred interaction response: opened by a command here (`interaction` set), or
    restored from the job row (token and message id only, edited as a webhook message)."""

    interaction: discord.Interaction | None
    token: str
    opened: float  # time.monotonic() when the interaction was created
    message_id: int | None = None
    stored: bool = False  # token and message id are in the job row

    def expired(self) -> bool:
        return time.monotonic() - self.opened > TOKEN_LIFETIME_S


class DiscordPresenter:
    """Implements `bot.delivery.Presenter` for Discord: renders `JobView`s."""

    platform = Platform.DISCORD
    result_actions: tuple[ButtonAction, ...] = (
        ButtonAction.REROLL,
        ButtonAction.DETAILS,
        ButtonAction.DELETE,
    )

    def __init__(
        self,
        client: discord.Client,
        service: BotService,
        *,
        edit_interval_s: float,
        token_key: str,
        on_token_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._token_key = token_key  # seals interaction tokens in job rows (bot/discord/sealed_token.py)
        self._on_token_refused = on_token_refused
        self._service = service
        self._interval = edit_interval_s
        self._lines: dict[int, _StatusLine] = {}
        self._throttle = StatusThrottle()
        self._upload_limits: dict[str, int] = {}  # channel id -> bytes, as the last interaction said
        # Jobs that ended before their handler opened a status line (fast jobs): the final text to show.
        self._finals: OrderedDict[int, str] = OrderedDict()
        # Posted images whose status line still has to say so (see clean_up).
        self._to_clean: dict[int, str] = {}

    # -- from the command handlers --------------------------------------------------------------
    async def open(self, interaction: discord.Interaction, queued: Queued) -> None:
        """Start showing `queued` in the interaction's deferred response."""
        job_id = queued.job.id
        self._upload_limits[str(interaction.channel_id)] = interaction.filesize_limit
        line = self._lines.get(job_id)
        if line is None or line.interaction is None or line.interaction.id != interaction.id:
            if line is not None:  # a second press returned the same job: the newest click shows it
                self._close(job_id)
            self._lines[job_id] = _StatusLine(interaction, interaction.token, time.monotonic())
        final = self._finals.get(job_id)
        await self._edit(job_id, final or texts.queued_text(queued), final=final is not None)
        if final is not None:
            self._close(job_id)

    async def show_result(self, interaction: discord.Interaction, job: Job) -> None:
        """Answer /show: the finished picture in the (deferred, ephemeral) response."""
        self._upload_limits[str(interaction.channel_id)] = interaction.filesize_limit
        upload = await self._upload(job)
        await interaction.edit_original_response(
            embed=result_embed(job, upload),
            attachments=[discord.File(io.BytesIO(upload.data), filename=upload.filename)],
            view=components(build_view(job, result_actions=self.result_actions).buttons),
            allowed_mentions=NO_MENTIONS,
        )

    # -- Presenter ------------------------------------------------------------------------------
    async def show_progress(self, view: JobView) -> None:
        if self._line(view.job) is not None:
            await self._edit(view.job.id, view.status_line, final=False)

    async def deliver(self, view: JobView) -> str | None:
        job = view.job
        self._line(job)
        upload = await self._upload(job)
        file = discord.File(io.BytesIO(upload.data), filename=upload.filename)
        try:
            message = await self._post(
                job, embed=result_embed(job, upload), file=file, view=components(view.buttons)
            )
        except (discord.Forbidden, discord.NotFound) as error:
            # Retrying cannot help (the channel is gone or the bot may not post there): give up on it.
            log.warning("job=%s could not be posted to channel %s: %s", job.id, job.requester.chat_id, error)
            await self._finish(job.id, f"Job #{job.id} is done, but I may not post in this channel.")
            return None
        log.info("job=%s delivered as message %s", job.id, message.id)
        final = f"{view.status_line} It is posted in this channel."
        self._remember_final(job.id, final)
        self._to_clean[job.id] = final
        return str(message.id)

    async def clean_up(self, job: Job) -> None:
        """Point the status line at the posted image (a separate step: the image is out already)."""
        final = self._to_clean.pop(job.id, None)
        if final is not None:
            await self._finish(job.id, final)

    async def report_ready_later(self, job: Job) -> None:
        await self._post(job, content=f"{job.requester.user_name}: {texts.ready_later_text(job)}")

    async def report_failure(self, view: JobView) -> None:
        job = view.job
        self._line(job)
        if await self._finish(job.id, view.status_line, view.buttons):
            return
        # No status line can show it (a restart, or the token died): say it in the channel instead.
        try:
            await self._post(
                job, content=f"{job.requester.user_name}: {view.status_line}", view=components(view.buttons)
            )
        except (discord.Forbidden, discord.NotFound) as error:
            log.warning("job=%s failure notice could not be posted: %s", job.id, error)

    async def report_cancelled(self, view: JobView) -> None:
        self._line(view.job)
        await self._finish(view.job.id, view.status_line)

    async def close(self) -> None:
        """Stop waiting edits (on shutdown)."""
        self._lines.clear()
        await self._throttle.close()

    async def _post(self, job: Job, **content: Any) -> discord.Message:
        """A message in the job's channel, with the bot token; a 401 means the token was revoked."""
        channel = self._client.get_partial_messageable(int(job.requester.chat_id))
        try:
            return await channel.send(allowed_mentions=NO_MENTIONS, **content)
        except discord.HTTPException as error:
            if error.status == 401:
                self._on_token_refused()
            raise

    # -- status lines ---------------------------------------------------------------------------
    def _line(self, job: Job) -> _StatusLine | None:
        """The job's status line: opened here, or restored from the token stored in its row (another
        chat process opened it, or this one before a restart) while that token still lives."""
        line = self._lines.get(job.id)
        if line is not None or job.status_token is None or job.status_token_at is None:
            return line
        if not (job.status_message_id or "").isdigit():
            return None
        age_s = (datetime.now(UTC) - job.status_token_at).total_seconds()
        token = unseal(job.status_token, self._token_key)
        if age_s >= TOKEN_LIFETIME_S or token is None:
            return None
        line = _StatusLine(
            None, token, time.monotonic() - age_s, int(job.status_message_id or 0), stored=True
        )
        self._lines[job.id] = line
        return line

    async def _finish(self, job_id: int, text: str, buttons: Sequence[ButtonSpec] = ()) -> bool:
        """Show a job's last status; False if no live status line could show it."""
        self._remember_final(job_id, text)
        shown = await self._edit(job_id, text, final=True, buttons=buttons)
        self._close(job_id)
        return shown

    async def _edit(self, job_id: int, text: str, *, final: bool, buttons: Sequence[ButtonSpec] = ()) -> bool:
        line = self._lines.get(job_id)
        if line is None:
            return False

        async def send(text: str) -> bool:
            return await self._send(job_id, line, text, buttons)

        interval = self._interval
        return await self._throttle.update(
            job_id, text, send, interval_s=interval, final=final, force=bool(buttons)
        )

    async def _send(self, job_id: int, line: _StatusLine, text: str, buttons: Sequence[ButtonSpec]) -> bool:
        if line.expired():
            self._close(job_id)
            return False
        try:
            message = await self._edit_line(line, text, components(buttons) if buttons else None)
        except discord.DiscordException as error:
            # The token died or the message was dismissed: the result still arrives in the channel.
            log.info("job=%s status line can no longer be edited: %s", job_id, error)
            self._close(job_id)
            return False
        if not line.stored:
            line.stored = True
            line.message_id = message.id
            issued = datetime.now(UTC) - timedelta(seconds=time.monotonic() - line.opened)
            try:
                await self._service.set_status_message(
                    job_id, str(message.id), token=seal(line.token, self._token_key), token_issued_at=issued
                )
            except Exception:
                log.exception("job=%s: could not store its status line for other chat processes", job_id)
        return True

    async def _edit_line(self, line: _StatusLine, text: str, view: discord.ui.View | None) -> discord.Message:
        extra: dict[str, Any] = {} if view is None else {"view": view}
        if line.interaction is not None:
            return await line.interaction.edit_original_response(
                content=text, allowed_mentions=NO_MENTIONS, **extra
            )
        application_id = self._client.application_id
        if application_id is None or line.message_id is None:
            raise discord.ClientException("the status line cannot be edited before the client is ready")
        webhook = discord.Webhook.partial(application_id, line.token, client=self._client)
        return await webhook.edit_message(
            line.message_id, content=text, allowed_mentions=NO_MENTIONS, **extra
        )

    def _close(self, job_id: int) -> None:
        self._lines.pop(job_id, None)
        self._throttle.forget(job_id)

    def _remember_final(self, job_id: int, text: str) -> None:
        self._finals[job_id] = text
        while len(self._finals) > _REMEMBERED_FINALS:
            self._finals.popitem(last=False)

    async def _upload(self, job: Job) -> Upload:
        png = await self._service.image_bytes(job)
        return await fit_upload(
            job, png, self._upload_limits.get(job.requester.chat_id, DEFAULT_UPLOAD_LIMIT)
        )


def result_embed(job: Job, upload: Upload) -> discord.Embed:
    """Prompt, seed, steps, size, seconds and job id, with the image shown inside the embed."""
    request = job.request
    embed = discord.Embed(description=texts.shorten(request.prompt, 4000), colour=discord.Colour.blurple())
    embed.set_author(name=texts.shorten(f"for {job.requester.user_name}", 256))
    embed.add_field(name="Seed", value=str(request.seed))
    embed.add_field(name="Steps", value=str(request.steps))
    embed.add_field(name="Size", value=f"{request.width}x{request.height}")
    if job.duration_s is not None:
        embed.add_field(name="Time", value=f"{job.duration_s:.1f} s")
    embed.add_field(name="Job", value=f"#{job.id}")
    if request.negative_prompt:
        embed.add_field(name="Leave out", value=texts.shorten(request.negative_prompt, 1000), inline=False)
    embed.set_image(url=f"attachment://{upload.filename}")
    if upload.note:
        embed.set_footer(text=upload.note)
    return embed
