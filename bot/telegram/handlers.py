"""Telegram updates -> one BotService call -> a reply. Thin on purpose: the rules live in bot/service.py."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any

from telegram import BotCommand, CallbackQuery, Message, ReplyParameters, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import texts
from bot.command_parser import MAX_SEED, check_job_id, check_seed, parse_imagine
from bot.errors import InvalidRequest, NothingToDo, UserFacingError
from bot.service import BotService
from bot.settings import LimitsSettings
from bot.standing import Queued
from bot.telegram import keyboards
from bot.telegram.access import AccessPolicy
from bot.telegram.acknowledgements import Acknowledger
from bot.telegram.keyboards import Action, ButtonPress
from bot.telegram.presenter import TelegramPresenter
from storage.jobs import JobStatus, Platform, Requester

logger = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
TelegramApp = Application[Any, Any, Any, Any, Any, Any]

COMMANDS: tuple[BotCommand, ...] = (
    BotCommand("imagine", "Draw a picture: /imagine <prompt> [--ar 16:9] [--seed N]"),
    BotCommand("reroll", "Your last prompt again with a new seed, or /reroll <seed>"),
    BotCommand("history", "Your last 10 images"),
    BotCommand("queue", "What is being drawn and where your jobs stand"),
    BotCommand("cancel", "Stop your newest queued or running job"),
    BotCommand("show", "Post a finished picture again: /show <job id>"),
    BotCommand("help", "How to write prompts and flags"),
)

MAX_MESSAGE = 4096
UNKNOWN_BUTTON = "This button is from an older version of the bot and no longer works."
PRIVATE_CHAT_NOTE = "In a private chat with me, any message that is not a command is a prompt too.\n"

_INTEGER = re.compile(r"-?[0-9]+")

# Edited messages must not queue a second job, so commands react to new messages only.
_NEW_MESSAGES = filters.UpdateType.MESSAGE


@dataclass(frozen=True, slots=True)
class Caller:
    requester: Requester
    is_admin: bool


class TelegramHandlers:
    """The callbacks PTB calls for commands, private-chat text and button presses."""

    def __init__(
        self,
        service: BotService,
        limits: LimitsSettings,
        access: AccessPolicy,
        presenter: TelegramPresenter,
        acks: Acknowledger,
    ) -> None:
        self._service = service
        self._limits = limits
        self._help = (
            texts.help_text([(f"/{c.command}", c.description) for c in COMMANDS], limits)
            + "\n"
            + PRIVATE_CHAT_NOTE
        )
        self._access = access
        self._presenter = presenter
        self._acks = acks

    def register(self, app: TelegramApp) -> None:
        app.add_handler(CommandHandler("imagine", self.imagine, filters=_NEW_MESSAGES))
        app.add_handler(CommandHandler("reroll", self.reroll, filters=_NEW_MESSAGES))
        app.add_handler(CommandHandler("history", self.history, filters=_NEW_MESSAGES))
        app.add_handler(CommandHandler("queue", self.queue, filters=_NEW_MESSAGES))
        app.add_handler(CommandHandler("cancel", self.cancel, filters=_NEW_MESSAGES))
        app.add_handler(CommandHandler("show", self.show, filters=_NEW_MESSAGES))
        app.add_handler(CommandHandler(["help", "start"], self.help, filters=_NEW_MESSAGES))
        private = _NEW_MESSAGES & filters.ChatType.PRIVATE
        app.add_handler(MessageHandler(private & filters.TEXT & ~filters.COMMAND, self.private_text))
        app.add_handler(MessageHandler(private & filters.COMMAND, self.unknown_command))
        app.add_handler(CallbackQueryHandler(self.button))
        app.add_error_handler(self.error)

    # -- commands -------------------------------------------------------------------------------
    async def imagine(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is not None:
            await self._imagine(update, message, _command_argument(message))

    async def private_text(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is not None and message.text:
            await self._imagine(update, message, message.text)

    async def reroll(self, update: Update, context: Context) -> None:
        message, caller = await self._admit_message(update)
        if message is None or caller is None:
            return
        try:
            seed = _parse_seed(context.args or [])
            queued = await self._service.reroll(caller.requester, seed=seed, is_admin=caller.is_admin)
        except UserFacingError as error:
            await _reply(message, str(error))
            return
        await self._post_status(message, queued)

    async def history(self, update: Update, context: Context) -> None:
        message, caller = await self._admit_message(update)
        if message is None or caller is None:
            return
        jobs = await self._service.history(caller.requester, 10)
        markup = keyboards.history_keyboard(jobs) if jobs else None
        await _reply(message, texts.history_text(jobs), reply_markup=markup)

    async def queue(self, update: Update, context: Context) -> None:
        message, caller = await self._admit_message(update)
        if message is None or caller is None:
            return
        overview = await self._service.queue_overview(caller.requester)
        await _reply(message, texts.queue_text(overview))

    async def cancel(self, update: Update, context: Context) -> None:
        message, caller = await self._admit_message(update)
        if message is None or caller is None:
            return
        try:
            job_id = _parse_job_id(context.args or [])
            job = await self._service.cancel(caller.requester, job_id, is_admin=caller.is_admin)
        except UserFacingError as error:
            await _reply(message, str(error))
            return
        await _reply(message, texts.cancelled_text(job))

    async def show(self, update: Update, context: Context) -> None:
        message, caller = await self._admit_message(update)
        if message is None or caller is None:
            return
        try:
            job_id = _parse_job_id(context.args or [], command="show")
            if job_id is None:
                raise InvalidRequest("Write /show <job id>, e.g. /show 42 (/history lists yours).")
            job = await self._service.show(caller.requester, job_id, is_admin=caller.is_admin)
            await self._presenter.post_image(job, reply_to=message.message_id)
        except UserFacingError as error:
            await _reply(message, str(error))

    async def help(self, update: Update, context: Context) -> None:
        message, caller = await self._admit_message(update)
        if message is not None and caller is not None:
            await _reply(message, self._help)

    async def unknown_command(self, update: Update, context: Context) -> None:
        message, caller = await self._admit_message(update)
        if message is None or caller is None or not message.text:
            return
        command = message.text.split(maxsplit=1)[0]
        if "@" in command and command.partition("@")[2].lower() != (message.get_bot().username or "").lower():
            return  # addressed to another bot
        await _reply(message, f"I don't know {command}. Send /help for what I can do.")

    # -- buttons --------------------------------------------------------------------------------
    async def button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        if query is None:
            return
        chat = update.effective_chat
        user = update.effective_user
        if chat is None or user is None or not self._access.allows(user.id, chat.id):
            await query.answer(texts.not_allowed_text(), show_alert=True)
            return
        press = keyboards.parse_callback_data(query.data)
        if press is None or not _is_on_its_message(query):
            await query.answer(UNKNOWN_BUTTON, show_alert=True)
            return
        caller = Caller(_requester(update), self._access.is_admin(user.id))
        try:
            if press.action in (Action.REROLL, Action.RETRY):
                await self._button_reroll(update, caller, press)
            elif press.action is Action.ORIGINAL:
                await self._button_original(update, caller, press)
            else:
                await self._button_delete(update, caller, press)
        except UserFacingError as error:
            await query.answer(str(error), show_alert=True)

    async def _button_reroll(self, update: Update, caller: Caller, press: ButtonPress) -> None:
        query = update.callback_query
        assert query is not None
        seed: int | None = None
        if press.action is Action.RETRY:
            seed = (await self._service.job(press.job_id)).request.seed
        queued = await self._service.reroll(
            caller.requester, seed=seed, job_id=press.job_id, from_button=True, is_admin=caller.is_admin
        )
        try:  # queued either way: a failed answer must not reach the "try again" error reply
            if not queued.created:
                await query.answer(f"Already queued as job #{queued.job.id}.")
                return
            await query.answer(f"Queued as job #{queued.job.id}.")
        except TelegramError as error:
            logger.warning("job=%s queued, but the button press was not answered: %s", queued.job.id, error)
            if not queued.created:
                return
        if isinstance(query.message, Message):
            await self._post_status(query.message, queued)
        else:
            await self._post_status_in(update, queued)

    async def _button_original(self, update: Update, caller: Caller, press: ButtonPress) -> None:
        query = update.callback_query
        chat = update.effective_chat
        assert query is not None and chat is not None
        job = await self._service.job(press.job_id)
        # Only the job's own chat (or its owner, or an admin) may fetch its file.
        owner, asker = job.requester, caller.requester
        visible = owner.platform is asker.platform and (
            asker.chat_id == owner.chat_id or asker.user_id == owner.user_id
        )
        if not (visible or caller.is_admin):
            raise NothingToDo(f"There is no job #{job.id} here.")
        if job.status is not JobStatus.DONE:
            await query.answer(f"Job #{job.id} has no image.", show_alert=True)
            return
        png = await self._service.image_bytes(job)  # says so if the picture expired
        await query.answer("Sending the original PNG…")
        await chat.send_document(
            document=io.BytesIO(png),
            filename=f"majicbot-{job.id}-{job.request.seed}.png",
            caption=f"Original PNG of job #{job.id} (lossless).",
            reply_parameters=_reply_parameters(query.message),
        )

    async def _button_delete(self, update: Update, caller: Caller, press: ButtonPress) -> None:
        query = update.callback_query
        assert query is not None
        job = await self._service.job_for_owner_or_admin(
            caller.requester, press.job_id, is_admin=caller.is_admin
        )
        if query.message is None:
            await query.answer("That message is too old for me to delete.", show_alert=True)
            return
        try:
            await query.get_bot().delete_message(query.message.chat.id, query.message.message_id)
        except BadRequest as error:
            logger.info("job=%s could not delete its image message: %s", job.id, error)
            await query.answer("Telegram would not let me delete that message; it may be too old.")
            return
        await query.answer(f"Deleted job #{job.id}'s image.")
        logger.info("job=%s image message deleted by telegram user %s", job.id, caller.requester.user_id)

    # -- shared steps -------------------------------------------------------------------------
    async def _imagine(self, update: Update, message: Message, text: str) -> None:
        _, caller = await self._admit_message(update)
        if caller is None:
            return
        try:
            args = parse_imagine(text, self._limits)
            queued = await self._service.imagine(caller.requester, args, is_admin=caller.is_admin)
        except UserFacingError as error:
            await _reply(message, str(error))
            return
        await self._post_status(message, queued)

    async def _post_status(self, reply_to: Message, queued: Queued) -> None:
        """Answer at once with the queue position and ETA (see bot/telegram/acknowledgements.py)."""
        logger.info("job=%s queued from telegram chat %s", queued.job.id, reply_to.chat_id)
        await self._acks.acknowledge(reply_to, queued)

    async def _post_status_in(self, update: Update, queued: Queued) -> None:
        chat = update.effective_chat
        assert chat is not None
        text = texts.queued_text(queued)
        try:
            status = await chat.send_message(text)
        except TelegramError as error:  # queued all the same: never invite a second press
            logger.warning("job=%s queued, but the answer was not sent: %s", queued.job.id, error)
            return
        await self._presenter.attach_status(queued.job, status.message_id, text)

    async def _admit_message(self, update: Update) -> tuple[Message | None, Caller | None]:
        """The message and who sent it, or a polite refusal (then the caller is None)."""
        message = update.effective_message
        user = update.effective_user
        chat = update.effective_chat
        if message is None or user is None or chat is None:
            return message, None
        if not self._access.allows(user.id, chat.id):
            logger.info("refused telegram user %s in chat %s", user.id, chat.id)
            await _reply(message, texts.not_allowed_text())
            return message, None
        return message, Caller(_requester(update), self._access.is_admin(user.id))

    async def error(self, update: object, context: Context) -> None:
        logger.error("a Telegram update failed: %s", context.error, exc_info=context.error)
        if not isinstance(update, Update):
            return
        sorry = texts.unexpected_error_text(context.error)
        try:
            if update.callback_query is not None:
                await update.callback_query.answer(sorry, show_alert=True)
            elif update.effective_message is not None:
                await _reply(update.effective_message, sorry)
        except TelegramError as error:  # a courtesy (the query may be answered already); logged above
            logger.debug("could not tell the user about the failed update: %s", error)


def _is_on_its_message(query: CallbackQuery) -> bool:
    """Whether the pressed data is one of the message's own buttons. Clients can send any callback
    data; Telegram leaves out messages too old to show, and then the service's checks still apply."""
    message = query.message
    if not isinstance(message, Message):
        return True
    markup = message.reply_markup
    if markup is None:
        return False
    return any(button.callback_data == query.data for row in markup.inline_keyboard for button in row)


def _requester(update: Update) -> Requester:
    user = update.effective_user
    chat = update.effective_chat
    assert user is not None and chat is not None
    return Requester(
        platform=Platform.TELEGRAM,
        chat_id=str(chat.id),
        user_id=str(user.id),
        user_name=user.username or user.full_name,
    )


def _command_argument(message: Message) -> str:
    """The text after the leading /command (or /command@bot)."""
    text = message.text or ""
    for entity in message.entities:
        if entity.type == "bot_command" and entity.offset == 0:
            command = message.parse_entity(entity)
            return text[len(command) :].strip()
    return text.partition(" ")[2].strip()


def _parse_seed(args: list[str]) -> int | None:
    if not args:
        return None
    if len(args) > 1 or not _INTEGER.fullmatch(args[0]):
        raise InvalidRequest(
            "Write /reroll for a new random seed, or /reroll <seed> with a whole number "
            f"from 0 to {MAX_SEED}, e.g. /reroll 1234."
        )
    return check_seed(int(args[0]))


def _parse_job_id(args: list[str], command: str = "cancel") -> int | None:
    if not args:
        return None
    if len(args) > 1 or not _INTEGER.fullmatch(args[0].lstrip("#")):
        if command == "cancel":
            raise InvalidRequest(
                "Write /cancel to stop your newest job, or /cancel <job id>, e.g. /cancel 42."
            )
        raise InvalidRequest(f"Write /{command} <job id>, e.g. /{command} 42 (/history lists yours).")
    return check_job_id(int(args[0].lstrip("#")))


def _reply_parameters(message: object) -> ReplyParameters | None:
    if not isinstance(message, Message):
        return None
    return ReplyParameters(message_id=message.message_id, allow_sending_without_reply=True)


async def _reply(message: Message, text: str, **kwargs: Any) -> Message:
    """Plain text (no parse_mode: the text may hold user input), quoting the user's message."""
    return await message.get_bot().send_message(
        message.chat_id,
        text[:MAX_MESSAGE],
        reply_parameters=_reply_parameters(message),
        **kwargs,
    )
