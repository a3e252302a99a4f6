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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot import texts
from bot.discord import DISCORD
from bot.discord.buttons import components
from bot.image_fallback import Upload, fit_uploads
from bot.job_view import ButtonAction, ButtonSpec, JobView, build_view
from bot.sealed_token import seal, unseal
from bot.service import BotService
from bot.standing import Queued
from bot.status_presenter import StatusPresenter
from storage.jobs import Job

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# Discord refuses edits through an interaction token 15 minutes after the interaction; stop a little
# earlier so a slow edit never lands on a dead token.
TOKEN_LIFETIME_S = 14.5 * 60
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
MAX_FILES = 10  # attachments in one message


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


class DiscordPresenter(StatusPresenter):
    """Implements `bot.delivery.Presenter` for Discord: renders `JobView`s (`bot.status_presenter`)."""

    platform = DISCORD
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
        super().__init__()
        self._client = client
        self._token_key = token_key  # seals interaction tokens in job rows (bot/sealed_token.py)
        self._on_token_refused = on_token_refused
        self._service = service
        self._interval = edit_interval_s
        self._lines: dict[int, _StatusLine] = {}
        self._upload_limits: dict[str, int] = {}  # channel id -> bytes, as the last interaction said

    # -- from the command handlers --------------------------------------------------------------
    async def open(self, interaction: discord.Interaction, queued: Queued) -> None:
        """Start showing `queued` in the interaction's deferred response."""
        job = queued.job
        self._upload_limits[str(interaction.channel_id)] = interaction.filesize_limit
        line = self._lines.get(job.id)
        if line is None or line.interaction is None or line.interaction.id != interaction.id:
            if line is not None:  # a second press returned the same job: the newest click shows it
                self._close_line(job.id)
            self._lines[job.id] = _StatusLine(interaction, interaction.token, time.monotonic())
        ending = self._ending(job.id)
        await self._show(job, ending or texts.queued_text(queued), final=ending is not None)
        if ending is not None:
            self._close_line(job.id)

    async def show_result(self, interaction: discord.Interaction, job: Job) -> None:
        """Answer /show: the finished picture in the (deferred, ephemeral) response."""
        self._upload_limits[str(interaction.channel_id)] = interaction.filesize_limit
        uploads = await self._uploads(job)
        await interaction.edit_original_response(
            embed=result_embed(job, uploads),
            attachments=_files(job, uploads),
            view=components(build_view(job, result_actions=self.result_actions).buttons),
            allowed_mentions=NO_MENTIONS,
        )

    async def report_ready_later(self, job: Job) -> None:
        await self._post(job, content=f"{job.requester.user_name}: {texts.ready_later_text(job)}")

    async def close(self) -> None:
        """Stop waiting edits (on shutdown)."""
        self._lines.clear()
        await self._throttle.close()

    # -- bot.status_presenter primitives --------------------------------------------------------
    async def _post_picture(self, view: JobView) -> str | None:
        job = view.job
        uploads = await self._uploads(job)
        try:
            message = await self._post(
                job,
                embed=result_embed(job, uploads),
                files=_files(job, uploads),
                view=components(view.buttons),
            )
        except (discord.Forbidden, discord.NotFound) as error:
            # Retrying cannot help (the channel is gone or the bot may not post there): give up on it.
            log.warning("job=%s could not be posted to channel %s: %s", job.id, job.requester.chat_id, error)
            await self._finish(job, f"Job #{job.id} is done, but I may not post in this channel.")
            return None
        log.info("job=%s delivered as message %s", job.id, message.id)
        return str(message.id)

    async def _post_text(self, job: Job, text: str, buttons: Sequence[ButtonSpec]) -> None:
        try:
            await self._post(job, content=f"{job.requester.user_name}: {text}", view=components(buttons))
        except (discord.Forbidden, discord.NotFound) as error:
            log.warning("job=%s notice could not be posted: %s", job.id, error)

    async def _tidy(self, job: Job, ending: str) -> None:
        """Point the status line at the posted image (a separate step: the image is out already)."""
        await self._finish(job, ending)

    def _edit_interval(self, job: Job) -> float:
        return self._interval

    def _open_line(self, job: Job) -> bool:
        """The job's status line: opened here, or restored from the token stored in its row (another
        chat process opened it, or this one before a restart) while that token still lives."""
        if job.id in self._lines:
            return True
        if job.status_token is None or job.status_token_at is None:
            return False
        if not (job.status_message_id or "").isdigit():
            return False
        age_s = (datetime.now(UTC) - job.status_token_at).total_seconds()
        token = unseal(job.status_token, self._token_key)
        if age_s >= TOKEN_LIFETIME_S or token is None:
            return False
        opened = time.monotonic() - age_s
        self._lines[job.id] = _StatusLine(None, token, opened, int(job.status_message_id or 0), stored=True)
        return True

    def _close_line(self, job_id: int) -> None:
        self._lines.pop(job_id, None)
        super()._close_line(job_id)

    def _job_ending(self, job: Job) -> None:
        pass  # the status line stays open until the outcome is out: it shows the last words

    async def _edit(self, job: Job, text: str, *, buttons: Sequence[ButtonSpec], progress: bool) -> bool:
        line = self._lines.get(job.id)
        if line is None:
            return False
        if line.expired():
            self._close_line(job.id)
            return False
        try:
            message = await self._edit_line(line, text, components(buttons) if buttons else None)
        except discord.DiscordException as error:
            # The token died or the message was dismissed: the result still arrives in the channel.
            log.info("job=%s status line can no longer be edited: %s", job.id, error)
            self._close_line(job.id)
            return False
        if not line.stored:
            line.stored = True
            line.message_id = message.id
            issued = datetime.now(UTC) - timedelta(seconds=time.monotonic() - line.opened)
            try:
                await self._service.set_status_message(
                    job.id, str(message.id), token=seal(line.token, self._token_key), token_issued_at=issued
                )
            except Exception:
                log.exception("job=%s: could not store its status line for other chat processes", job.id)
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

    async def _post(self, job: Job, **content: Any) -> discord.Message:
        """A message in the job's channel, with the bot token; a 401 means the token was revoked."""
        channel = self._client.get_partial_messageable(int(job.requester.chat_id))
        try:
            return await channel.send(allowed_mentions=NO_MENTIONS, **content)
        except discord.HTTPException as error:
            if error.status == 401:
                self._on_token_refused()
            raise

    async def _uploads(self, job: Job) -> list[Upload]:
        """Every image of the job (up to Discord's 10 files a message), each fitted to the limit."""
        pngs = await self._service.all_image_bytes(job)
        return await fit_uploads(
            job, pngs[:MAX_FILES], self._upload_limits.get(job.requester.chat_id, DEFAULT_UPLOAD_LIMIT)
        )


def _files(job: Job, uploads: Sequence[Upload]) -> list[discord.File]:
    """The uploads, behind a spoiler when the prompt matched the operator's spoiler list."""
    return [
        discord.File(io.BytesIO(upload.data), filename=upload.filename, spoiler=job.spoiler)
        for upload in uploads
    ]


def result_embed(job: Job, uploads: Sequence[Upload]) -> discord.Embed:
    """Prompt, seed, steps, size, seconds, job id and what made it; one image is shown inside the
    embed (beside it, as a spoilered attachment, for a spoiler: an embed's image cannot be hidden),
    several as the message's files (Discord lays them out as a grid)."""
    request = job.request
    embed = discord.Embed(description=texts.shorten(request.prompt, 4000), colour=discord.Colour.blurple())
    embed.set_author(name=texts.shorten(f"for {job.requester.user_name}", 256))
    embed.add_field(name="Seed", value=str(request.seed))
    embed.add_field(name="Steps", value=str(request.steps))
    embed.add_field(name="Size", value=f"{request.width}x{request.height}")
    if job.duration_s is not None:
        embed.add_field(name="Time", value=f"{job.duration_s:.1f} s")
    embed.add_field(name="Job", value=f"#{job.id}")
    if len(uploads) > 1:
        embed.add_field(name="Images", value=f"{len(uploads)} (U upscales, V varies image n)")
    origin = texts.lineage_text(job)
    if origin is not None:
        embed.add_field(name="Made by", value=origin)
    if request.strength is not None:
        embed.add_field(name="Strength", value=f"{request.strength:g}")
    if request.negative_prompt:
        embed.add_field(name="Leave out", value=texts.shorten(request.negative_prompt, 1000), inline=False)
    if len(uploads) == 1 and not job.spoiler:
        embed.set_image(url=f"attachment://{uploads[0].filename}")
    notes = sorted({upload.note for upload in uploads if upload.note})
    if notes:
        embed.set_footer(text=texts.shorten(" ".join(notes), 2048))
    return embed
