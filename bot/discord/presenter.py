"""How a job's life looks on Discord: an ephemeral status line, then the image as a channel message.

The status line is the deferred interaction response (`bot.status_presenter` edits it, throttled, and
keeps its sealed token in the job row, so another chat process or a restart keeps editing it as a
webhook message while the token lives: 15 minutes). The result itself is posted with the bot token as
an ordinary message in the channel (or DM), which works however long the queue.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from typing import Any

import discord

from bot import texts
from bot.discord import DISCORD
from bot.discord.buttons import components
from bot.image_fallback import Upload, fit_uploads
from bot.job_view import ButtonAction, ButtonSpec, JobView, build_view
from bot.service import BotService
from bot.standing import Queued
from bot.status_lines import StatusLine
from bot.status_presenter import StatusPresenter
from storage.jobs import Job

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# Discord refuses edits through an interaction token 15 minutes after the interaction; stop a little
# earlier so a slow edit never lands on a dead token.
TOKEN_LIFETIME_S = 14.5 * 60
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
MAX_FILES = 10  # attachments in one message


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
        super().__init__(service, token_key=token_key, token_lifetime_s=TOKEN_LIFETIME_S)
        self._client = client
        self._on_token_refused = on_token_refused
        self._interval = edit_interval_s
        self._upload_limits: dict[str, int] = {}  # channel id -> bytes, as the last interaction said

    # -- from the command handlers --------------------------------------------------------------
    async def open(self, interaction: discord.Interaction, queued: Queued) -> None:
        """Start showing `queued` in the interaction's deferred response."""
        self._upload_limits[str(interaction.channel_id)] = interaction.filesize_limit
        await self.attach_status(
            queued.job, None, texts.queued_text(queued), token=interaction.token, opener=interaction
        )

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

    def _job_ending(self, job: Job) -> None:
        # The status line stays open until the outcome is out: it shows the last words.
        self._require_started()

    async def _edit(
        self, job: Job, line: StatusLine, text: str, *, buttons: Sequence[ButtonSpec], progress: bool
    ) -> bool:
        try:
            message = await self._edit_line(line, text, components(buttons) if buttons else None)
        except discord.DiscordException as error:
            # The token died or the message was dismissed: the result still arrives in the channel.
            log.info("job=%s status line can no longer be edited: %s", job.id, error)
            self._close_line(job.id)
            return False
        line.message_id = str(message.id)
        return True

    async def _edit_line(self, line: StatusLine, text: str, view: discord.ui.View | None) -> discord.Message:
        """Through the interaction that opened the line here, else as the interaction's webhook message."""
        extra: dict[str, Any] = {} if view is None else {"view": view}
        if isinstance(line.opener, discord.Interaction):
            return await line.opener.edit_original_response(
                content=text, allowed_mentions=NO_MENTIONS, **extra
            )
        application_id = self._client.application_id
        if application_id is None or line.message_id is None or line.token is None:
            raise discord.ClientException("the status line cannot be edited before the client is ready")
        webhook = discord.Webhook.partial(application_id, line.token, client=self._client)
        return await webhook.edit_message(
            int(line.message_id), content=text, allowed_mentions=NO_MENTIONS, **extra
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
    """The prompt over the picture's facts (`texts.picture_facts`); one image is shown inside the
    embed (beside it, as a spoilered attachment, for a spoiler: an embed's image cannot be hidden),
    several as the message's files (Discord lays them out as a grid)."""
    embed = discord.Embed(
        description=texts.shorten(job.request.prompt, 4000), colour=discord.Colour.blurple()
    )
    embed.set_author(name=texts.shorten(f"for {job.requester.user_name}", 256))
    for fact in texts.picture_facts(job, len(uploads)):
        embed.add_field(name=fact.label, value=fact.value, inline=not fact.free_text)
    if len(uploads) == 1 and not job.spoiler:
        embed.set_image(url=f"attachment://{uploads[0].filename}")
    notes = sorted({upload.note for upload in uploads if upload.note})
    if notes:
        embed.set_footer(text=texts.shorten(" ".join(notes), 2048))
    return embed
