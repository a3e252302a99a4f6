"""Telegram updates -> one `ChatCommands` call -> a reply. Thin on purpose: the commands and their
options are `bot.command_table`'s, typed text is read by `bot.typed_commands`, the rules live in
bot/service.py.

Every handler is registered through `_entrance`, the one place that admits (`bot.entrance`) and says
who asks; each answer is rendered here, refusals and failures included (`bot.entrance.serve`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telegram import (
    BotCommand,
    CallbackQuery,
    InputFile,
    InputMediaDocument,
    Message,
    ReplyParameters,
    Update,
)
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
from bot.access import AccessPolicy, Caller, Place
from bot.acknowledgements import Acknowledger
from bot.button_presses import read_press
from bot.chat_commands import Answer, ChatCommands, Details, Refused, Reply, SettingsShown, Shown
from bot.command_table import COMMAND_TABLE, ImageFetch
from bot.delivery_record import album_of
from bot.entrance import ChatEntrance, serve
from bot.errors import InvalidRequest
from bot.input_images import check_file_size
from bot.service import Picture
from bot.settings_menu import settings_menu
from bot.standing import Queued
from bot.telegram import TELEGRAM
from bot.telegram.keyboards import markup, menu_markup
from bot.telegram.presenter import MAX_MESSAGE, AnswerTo, TelegramPresenter, reply_parameters
from bot.typed_commands import CommandLine, read_command_line
from storage.jobs import Job, Requester

logger = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
TelegramApp = Application[Any, Any, Any, Any, Any, Any]
Handler = Callable[[Update, Caller], Awaitable[None]]

# The menu all users see: the operators' commands are handled for everyone (the service refuses
# non-operators) but not offered.
COMMANDS: tuple[BotCommand, ...] = tuple(
    BotCommand(c.name, c.description) for c in COMMAND_TABLE if not c.operators_only
)

PRIVATE_CHAT_NOTE = (
    "In a private chat with me, any message that is not a command is a prompt too, and a picture with a "
    "caption starts from that picture.\n"
)

_IMAGINE_CAPTION = r"^/imagine(?:@\w+)?(?:\s|$)"
# Edited messages must not queue a second job, so commands react to new messages only.
_NEW_MESSAGES = filters.UpdateType.MESSAGE


class TelegramHandlers:
    """The callbacks PTB calls for commands, private-chat text and button presses: each runs one
    `ChatCommands` call and renders its answer."""

    def __init__(
        self,
        commands: ChatCommands,
        policy: AccessPolicy,
        presenter: TelegramPresenter,
        acks: Acknowledger[AnswerTo],
    ) -> None:
        self._commands = commands
        self._help = Reply(commands.help(typed=True).text + "\n" + PRIVATE_CHAT_NOTE)
        self._entry = ChatEntrance(commands, policy, explain_refusals=False)
        self._presenter = presenter
        self._acks = acks

    def register(self, app: TelegramApp) -> None:
        names = [c.name for c in COMMAND_TABLE if c.name != "help"]
        app.add_handler(CommandHandler(names, self._entrance(self.command), filters=_NEW_MESSAGES))
        app.add_handler(CommandHandler(["help", "start"], self._entrance(self.help), filters=_NEW_MESSAGES))
        # A picture with "/imagine ..." as its caption is an image prompt (commands never see captions);
        # in a private chat, any caption is a prompt too (as any text is), the picture its start.
        private = _NEW_MESSAGES & filters.ChatType.PRIVATE
        captions = filters.CaptionRegex(_IMAGINE_CAPTION) | (
            private & filters.CAPTION & ~filters.CaptionRegex(r"^/")
        )
        pictures = filters.PHOTO | filters.Document.IMAGE
        app.add_handler(MessageHandler(_NEW_MESSAGES & pictures & captions, self._entrance(self.picture)))
        app.add_handler(
            MessageHandler(private & filters.TEXT & ~filters.COMMAND, self._entrance(self.private_text))
        )
        app.add_handler(MessageHandler(private & filters.COMMAND, self._entrance(self.command)))
        app.add_handler(CallbackQueryHandler(self._entrance(self.button)))
        app.add_error_handler(self.error)

    def _entrance(self, handler: Handler) -> Callable[[Update, Context], Coroutine[Any, Any, None]]:
        """`handler`, for those the access rule admits; a polite refusal for the rest."""

        async def admitted(update: Update, context: Context) -> None:
            user, chat = update.effective_user, update.effective_chat
            if user is None or chat is None:
                return
            requester = Requester(TELEGRAM, str(chat.id), str(user.id), user.username or user.full_name)
            caller = await self._entry.admit(Place(user.id, chat.id, private=False), requester)
            if isinstance(caller, Refused):
                await self._say(update, caller.text)
                return
            await handler(update, caller)

        return admitted

    # -- messages -------------------------------------------------------------------------------
    async def command(self, update: Update, caller: Caller) -> None:
        """A typed command (in a private chat also one I don't know, which is answered so)."""
        message = _message(update)
        line = read_command_line(message.text or "")
        if line is None or not line.is_for(message.get_bot().username or ""):
            return  # addressed to another bot
        # "/imagine ..." written as a reply to a picture starts from that picture.
        picture = message.reply_to_message if line.name == "imagine" else None
        await self._typed(update, caller, line.name, line.argument, picture)

    async def picture(self, update: Update, caller: Caller) -> None:
        """A picture with "/imagine <prompt>" as its caption, or in a private chat with any prompt."""
        message = _message(update)
        caption = message.caption or ""
        line = read_command_line(caption) or CommandLine("imagine", "", caption)
        if line.name == "imagine" and line.is_for(message.get_bot().username or ""):
            await self._typed(update, caller, "imagine", line.argument, message)

    async def private_text(self, update: Update, caller: Caller) -> None:
        await self._typed(update, caller, "imagine", _message(update).text or "")

    async def _typed(
        self, update: Update, caller: Caller, name: str, argument: str, picture: Message | None = None
    ) -> None:
        image: ImageFetch | None = None if picture is None else (lambda: self._picture_bytes(picture))
        await self._answer(update, lambda: self._commands.text_command(caller, name, argument, image))

    async def _picture_bytes(self, message: Message) -> bytes | None:
        """The picture a message carries (its largest photo size, or an image document), fetched
        from Telegram after its announced size passed the limit; None when it carries none."""
        if message.photo:
            file_id, size = message.photo[-1].file_id, message.photo[-1].file_size
        elif message.document is not None and (message.document.mime_type or "").startswith("image/"):
            file_id, size = message.document.file_id, message.document.file_size
        else:
            return None
        if size is not None:
            check_file_size(size, self._commands.limits)
        try:
            file = await message.get_bot().get_file(file_id)
            if file.file_size is not None:
                check_file_size(file.file_size, self._commands.limits)
            return bytes(await file.download_as_bytearray())
        except TelegramError as error:
            logger.warning("a picture from chat %s could not be fetched: %s", message.chat_id, error)
            raise InvalidRequest(
                "I could not fetch your picture from Telegram (bots may fetch files up to 20 MB); "
                "send it again, or a smaller one."
            ) from None

    async def help(self, update: Update, caller: Caller) -> None:
        await self._render(update, self._help)

    async def button(self, update: Update, caller: Caller) -> None:
        query = update.callback_query
        assert query is not None
        press = read_press(
            query.data, caller.requester.user_id, offered=_offered(query), menu_owner=_menu_owner(query)
        )
        if isinstance(press, Refused):
            await self._say(update, press.text)
            return
        await self._answer(update, lambda: self._commands.press(caller, press))

    # -- answers --------------------------------------------------------------------------------
    async def _answer(self, update: Update, call: Callable[[], Awaitable[Answer]]) -> None:
        await serve(call, lambda answer: self._render(update, answer), f"telegram update {update.update_id}")

    async def _render(self, update: Update, answer: Answer) -> None:
        query, message = update.callback_query, update.effective_message
        if isinstance(answer, Queued):
            await self._queued(update, answer)
        elif isinstance(answer, Reply):
            assert message is not None
            await _reply(message, answer.text, reply_markup=markup(answer.buttons))
        elif isinstance(answer, Refused):
            await self._say(update, answer.text)
        elif isinstance(answer, Shown):
            assert message is not None
            await self._presenter.post_image(answer.job, reply_to=message.message_id)
        elif isinstance(answer, SettingsShown):
            await self._settings(update, answer)
        elif isinstance(answer, Picture):
            assert query is not None and update.effective_chat is not None
            await query.answer(texts.SENDING_ORIGINAL)
            caption = texts.original_caption(answer.job)
            if answer.others:  # a set: an album of the PNG files
                files = [InputMediaDocument(p.png, filename=p.filename) for p in (answer, *answer.others)]
                await query.get_bot().send_media_group(
                    update.effective_chat.id,
                    files,
                    caption=caption,
                    reply_parameters=_quoting(message),
                )
                return
            await query.get_bot().send_document(
                update.effective_chat.id,
                document=InputFile(answer.png, filename=answer.filename),
                caption=caption,
                reply_parameters=_quoting(message),
            )
        elif isinstance(answer, Details):
            assert query is not None and message is not None
            await query.answer()
            await _reply(message, answer.text)
        else:
            assert query is not None
            await self._delete(query, answer.job)

    async def _queued(self, update: Update, queued: Queued) -> None:
        query, chat = update.callback_query, update.effective_chat
        assert chat is not None
        if query is not None:
            try:  # queued either way: a failed answer must not reach the "try again" error reply
                await query.answer(texts.queued_press_text(queued))
            except TelegramError as error:
                logger.warning(
                    "job=%s queued, but the button press was not answered: %s", queued.job.id, error
                )
            if not queued.created:
                return
        # Answer at once with the queue position and ETA (see bot/acknowledgements.py), quoting the
        # command or the pressed message (none for a press on a message too old for Telegram to include).
        logger.info("job=%s queued from telegram chat %s", queued.job.id, chat.id)
        message = update.effective_message
        to = AnswerTo(chat.id, None if message is None else message.message_id)
        await self._acks.acknowledge(to, queued, chat=chat.id, batch=chat.type != "private")

    async def _settings(self, update: Update, shown: SettingsShown) -> None:
        """The settings with their menu: a reply to /settings, or the pressed menu edited in place."""
        keyboard = menu_markup(settings_menu(shown.view, shown.open_setting))
        query, message = update.callback_query, update.effective_message
        if query is None:
            assert message is not None
            await _reply(message, shown.view.text, reply_markup=keyboard)
            return
        await query.answer()
        try:
            await query.edit_message_text(shown.view.text[:MAX_MESSAGE], reply_markup=keyboard)
        except BadRequest as error:  # e.g. the value chosen was already set: nothing changed
            logger.info("telegram settings menu not edited: %s", error)

    async def _delete(self, query: CallbackQuery, job: Job) -> None:
        if query.message is None:
            await query.answer("That message is too old for me to delete.", show_alert=True)
            return
        chat_id, message_id = query.message.chat.id, query.message.message_id
        try:
            for album_message in album_of(job.result_message_id, message_id):
                with contextlib.suppress(BadRequest):  # already deleted by hand
                    await query.get_bot().delete_message(chat_id, album_message)
            await query.get_bot().delete_message(chat_id, message_id)
        except BadRequest as error:
            logger.info("job=%s could not delete its image message: %s", job.id, error)
            await query.answer("Telegram would not let me delete that message; it may be too old.")
            return
        await query.answer(texts.deleted_text(job))
        logger.info("job=%s image message deleted by telegram user %s", job.id, query.from_user.id)

    async def _say(self, update: Update, text: str) -> None:
        """`text` as an alert for a button press, or as a reply to a message."""
        if update.callback_query is not None:
            await update.callback_query.answer(text[:200], show_alert=True)
        elif update.effective_message is not None:
            await _reply(update.effective_message, text)

    async def error(self, update: object, context: Context) -> None:
        logger.error("a Telegram update failed: %s", context.error, exc_info=context.error)
        if not isinstance(update, Update):
            return
        try:
            await self._say(update, texts.unexpected_error_text(context.error))
        except TelegramError as error:  # a courtesy (the query may be answered already); logged above
            logger.debug("could not tell the user about the failed update: %s", error)


def _message(update: Update) -> Message:
    message = update.effective_message
    assert message is not None, "registered for message updates only"
    return message


def _offered(query: CallbackQuery) -> frozenset[str] | None:
    """The callback data of the pressed message's buttons; None when Telegram left the message out
    (too old to show: PTB reads that as a `Message` dated 0, with no keyboard)."""
    message = query.message
    if not isinstance(message, Message) or not message.is_accessible:
        return None
    markup = message.reply_markup
    rows = () if markup is None else markup.inline_keyboard
    return frozenset(b.callback_data for row in rows for b in row if isinstance(b.callback_data, str))


def _menu_owner(query: CallbackQuery) -> str | None:
    """Who sent the /settings that the pressed menu answers (None when Telegram does not say)."""
    message = query.message
    asked = message.reply_to_message if isinstance(message, Message) else None
    return None if asked is None or asked.from_user is None else str(asked.from_user.id)


def _quoting(message: object) -> ReplyParameters | None:
    return reply_parameters(message.message_id if isinstance(message, Message) else None)


async def _reply(message: Message, text: str, **kwargs: Any) -> Message:
    """Plain text (no parse_mode: the text may hold user input), quoting the user's message."""
    return await message.get_bot().send_message(
        message.chat_id, text[:MAX_MESSAGE], reply_parameters=_quoting(message), **kwargs
    )
