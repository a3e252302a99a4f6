"""Shows a job's life in Telegram: the answer to a command, status message edits, the "sending a
photo" action, the photo or album, failures."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from telegram import InputMediaDocument, InputMediaPhoto, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError, TimedOut
from telegram.ext import ExtBot

from bot import texts
from bot.delivery_record import result_message_id
from bot.errors import UserFacingError
from bot.image_fallback import fit_upload, fit_uploads, upload_name
from bot.job_view import ButtonAction, ButtonSpec, JobView, build_view
from bot.service import BotService
from bot.status_lines import StatusLine
from bot.status_presenter import StatusPresenter
from bot.telegram import TELEGRAM
from bot.telegram.keyboards import markup
from bot.telegram.rate_limiter import Priority, ProgressDropped
from bot.telegram.settings import TelegramSettings
from storage.jobs import Job

logger = logging.getLogger(__name__)

MAX_CAPTION = 1024
MAX_MESSAGE = 4096
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_SIDES = 10_000
# An upload answered late is still an upload: waiting longer for the answer than PTB's 5 s default keeps
# a slow Bot API from making us send the same picture twice (within delivery.post_timeout_s).
UPLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class AnswerTo:
    """Where the answer to a queued job goes: the chat, quoting the command (or the pressed message;
    None: nothing to quote)."""

    chat_id: int
    message_id: int | None


class TelegramPresenter(StatusPresenter):
    """The `bot.delivery.Presenter` for Telegram: renders `JobView`s (`bot.status_presenter`). One
    instance per bot, used from one event loop."""

    platform = TELEGRAM
    result_actions: tuple[ButtonAction, ...] = (
        ButtonAction.REROLL,
        ButtonAction.ORIGINAL,
        ButtonAction.DELETE,
    )
    activity_every_s = 4.0  # "sending a photo…" shows for about 5 s

    def __init__(self, bot: ExtBot[Any], service: BotService, settings: TelegramSettings) -> None:
        super().__init__(service)
        self._bot = bot
        self._settings = settings

    # -- called by the handlers ---------------------------------------------------------------
    async def answer(self, to: AnswerTo, text: str) -> int:
        """The answer to a queued job's command or button press (`bot.acknowledgements`)."""
        sent = await self._bot.send_message(
            to.chat_id,
            text,
            reply_parameters=reply_parameters(to.message_id),
            rate_limit_args=Priority.REPLY,
        )
        return sent.message_id

    async def post_image(self, job: Job, *, reply_to: int | None = None) -> Message:
        """Post a done job's pictures with their caption and buttons (for /show: a reply)."""
        pngs = await self._service.all_image_bytes(job)
        view = build_view(job, result_actions=self.result_actions)
        sent, _ = await self._send_images(view, pngs, reply_to=reply_to, priority=Priority.REPLY)
        return sent

    # -- bot.status_presenter primitives --------------------------------------------------------
    async def _edit(
        self, job: Job, line: StatusLine, text: str, *, buttons: Sequence[ButtonSpec], progress: bool
    ) -> bool:
        assert line.message_id is not None  # Telegram's status lines are messages posted by the bot
        priority = Priority.PROGRESS if progress else Priority.RESULT
        try:
            await self._bot.edit_message_text(
                text,
                chat_id=_chat_id(job),
                message_id=int(line.message_id),
                reply_markup=markup(buttons),
                rate_limit_args=priority,
            )
        except ProgressDropped:
            return False  # not shown: the next change is worth sending
        except TelegramError as error:
            # A user may delete the status message; progress is a courtesy, the outcome still comes.
            logger.info("job=%s could not edit its status message: %s", job.id, error)
            return progress
        return True

    async def _post_text(self, job: Job, text: str, buttons: Sequence[ButtonSpec]) -> None:
        try:
            await self._bot.send_message(
                _chat_id(job), text, reply_markup=markup(buttons), rate_limit_args=Priority.RESULT
            )
        except Forbidden as error:
            self._unreachable(job, error)

    async def _post_picture(self, view: JobView) -> str | None:
        job = view.job
        album: tuple[int, ...] = ()
        try:
            try:
                sent, album = await self._send_images(view, await self._service.all_image_bytes(job))
            except UserFacingError as error:  # the file is gone: say so rather than retry forever
                sent = await self._bot.send_message(
                    _chat_id(job), str(error), rate_limit_args=Priority.RESULT
                )
        except Forbidden as error:
            self._unreachable(job, error)
            return None
        logger.info("job=%s delivered to telegram chat %s", job.id, job.requester.chat_id)
        return result_message_id(sent.message_id, album)

    async def _tidy(self, job: Job, ending: str) -> None:
        """Delete the status message of a posted image or failure notice (a separate, later step)."""
        line = self._open_line(job)
        self._close_line(job.id)
        if line is not None and line.message_id is not None:
            try:
                await self._bot.delete_message(_chat_id(job), int(line.message_id))
            except TelegramError as error:
                logger.info("job=%s could not delete its status message: %s", job.id, error)

    def _edit_interval(self, job: Job) -> float:
        if _chat_id(job) > 0:  # Telegram's private chats have positive ids, groups negative
            return self._settings.progress_interval_private_s
        return self._settings.progress_interval_group_s

    async def _signal_activity(self, job: Job) -> bool:
        try:
            await self._bot.send_chat_action(_chat_id(job), ChatAction.UPLOAD_PHOTO)
        except Forbidden:
            return False  # the user blocked the bot or it left the group
        return True

    # -- internals ------------------------------------------------------------------------------
    async def _send_images(
        self,
        view: JobView,
        pngs: Sequence[bytes],
        *,
        reply_to: int | None = None,
        priority: Priority = Priority.RESULT,
    ) -> tuple[Message, tuple[int, ...]]:
        """One image: a photo with caption and buttons. Several: an album (Telegram puts no buttons
        under one), then one message with the caption and the buttons. The message with the buttons,
        and the album's message ids."""
        if len(pngs) == 1:
            return await self._send_image(view, pngs[0], reply_to=reply_to, priority=priority), ()
        job = view.job
        timeouts: dict[str, Any] = {"write_timeout": UPLOAD_TIMEOUT_S, "read_timeout": UPLOAD_TIMEOUT_S}
        album = await self._album(job, pngs)
        posted = await self._bot.send_media_group(
            _chat_id(job),
            album,
            reply_parameters=reply_parameters(reply_to),
            rate_limit_args=priority,
            **timeouts,
        )
        buttons = await self._bot.send_message(
            _chat_id(job),
            texts.caption(job, MAX_MESSAGE, len(pngs)),
            reply_markup=markup(view.buttons),
            rate_limit_args=priority,
        )
        return buttons, tuple(message.message_id for message in posted)

    async def _album(self, job: Job, pngs: Sequence[bytes]) -> list[InputMediaPhoto | InputMediaDocument]:
        """The images as an album of photos (each fitted to the photo limit), or of PNG documents
        when the size is past what Telegram takes as a photo."""
        if not _photo_sized(job):
            return [
                InputMediaDocument(png, filename=f"{upload_name(job, index)}.png")
                for index, png in enumerate(pngs)
            ]
        uploads = await fit_uploads(job, pngs, MAX_PHOTO_BYTES)
        return [
            InputMediaPhoto(upload.data, filename=upload.filename, has_spoiler=job.spoiler)
            for upload in uploads
        ]

    async def _send_image(
        self, view: JobView, png: bytes, *, reply_to: int | None = None, priority: Priority = Priority.RESULT
    ) -> Message:
        job = view.job
        common: dict[str, Any] = {
            "caption": texts.caption(job, MAX_CAPTION),
            "reply_markup": markup(view.buttons),
            "reply_parameters": reply_parameters(reply_to),
            "rate_limit_args": priority,
            "write_timeout": UPLOAD_TIMEOUT_S,
            "read_timeout": UPLOAD_TIMEOUT_S,
        }
        if _photo_sized(job):
            # Telegram recompresses photos anyway; only a PNG over the photo limit is re-encoded here.
            photo = await fit_upload(job, png, MAX_PHOTO_BYTES)
            try:
                return await self._bot.send_photo(
                    _chat_id(job),
                    photo=photo.data,
                    filename=photo.filename,
                    has_spoiler=job.spoiler,
                    **common,
                )
            except BadRequest as error:
                logger.warning("job=%s Telegram refused the photo (%s); sending a document", job.id, error)
        return await self._bot.send_document(
            _chat_id(job),
            document=io.BytesIO(png),
            filename=f"{upload_name(job)}.png",
            **common,
        )

    def _unreachable(self, job: Job, error: Forbidden) -> None:
        # Blocked by the user, or removed from the group: trying again cannot help.
        logger.warning("job=%s cannot post to telegram chat %s: %s", job.id, job.requester.chat_id, error)
        self._close_line(job.id)


def may_retry(error: Exception) -> bool:
    """Whether sending an answer again may help: a network error, but not a timeout (it may have
    been sent after all)."""
    return isinstance(error, NetworkError) and not isinstance(error, TimedOut)


def reply_parameters(message_id: int | None) -> ReplyParameters | None:
    """Quote message `message_id` (if any), and send all the same if it was deleted meanwhile."""
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


def _photo_sized(job: Job) -> bool:
    """Whether Telegram takes the job's images as photos by their size (width + height)."""
    return job.request.width + job.request.height <= MAX_PHOTO_SIDES


def _chat_id(job: Job) -> int:
    return int(job.requester.chat_id)
