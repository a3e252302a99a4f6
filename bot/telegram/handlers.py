"""Telegram updates -> one BotService call -> a reply. Thin on purpose: the rules live in bot/service.py.

Every handler is registered through `_entrance`, the one place that checks access and says who asks.
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
from bot.chat_commands import Answer, ChatCommands, Details, Reply, SettingsShown, Shown
from bot.errors import InvalidRequest, UserFacingError
from bot.input_images import check_file_size
from bot.job_view import ButtonPress
from bot.service import Picture
from bot.settings_menu import SettingPress, settings_menu
from bot.standing import Queued
from bot.telegram import TELEGRAM
from bot.telegram.acknowledgements import Acknowledger
from bot.telegram.keyboards import markup, menu_markup
from bot.telegram.presenter import TelegramPresenter, album_of
from storage.jobs import Job, Requester

logger = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
TelegramApp = Application[Any, Any, Any, Any, Any, Any]
Handler = Callable[[Update, Caller], Awaitable[None]]

COMMANDS: tuple[BotCommand, ...] = (
    BotCommand("imagine", "Draw: /imagine <prompt> [--ar 16:9] [--n 4]; as a photo's caption, from it"),
    BotCommand("reroll", "Your last prompt again with a new seed, or /reroll <seed>"),
    BotCommand("history", "Your last 10 images"),
    BotCommand("queue", "What is being drawn and where your jobs stand"),
    BotCommand("cancel", "Stop your newest queued or running job"),
    BotCommand("show", "Post a finished picture again: /show <job id>"),
    BotCommand("settings", "Your defaults: /settings, /settings <name> <value>, /settings reset"),
    BotCommand("help", "How to write prompts and flags"),
)
# Handled for everyone (the service refuses non-operators) but not in the menu, which all users see.
ADMIN_COMMANDS: tuple[BotCommand, ...] = (
    BotCommand("ban", "Refuse every command of a user: /ban <user id> [reason]"),
    BotCommand("unban", "Lift a ban: /unban <user id>"),
    BotCommand("bans", "Who is banned"),
)

MAX_MESSAGE = 4096
UNKNOWN_BUTTON = "This button is from an older version of the bot and no longer works."
OTHERS_MENU = "These are someone else's settings; send /settings for yours."
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
        acks: Acknowledger,
    ) -> None:
        self._commands = commands
        usage = [(f"/{c.command}", c.description) for c in COMMANDS]
        admin_usage = [(f"/{c.command}", c.description) for c in ADMIN_COMMANDS]
        self._help = Reply(commands.help(usage, admin_usage).text + "\n" + PRIVATE_CHAT_NOTE)
        self._policy = policy
        self._presenter = presenter
        self._acks = acks

    def register(self, app: TelegramApp) -> None:
        names = [c.command for c in (*COMMANDS, *ADMIN_COMMANDS) if c.command != "help"]
        app.add_handler(CommandHandler(names, self._entrance(self.command), filters=_NEW_MESSAGES))
        app.add_handler(CommandHandler(["help", "start"], self._entrance(self.help), filters=_NEW_MESSAGES))
        # A picture with "/imagine ..." as its caption: an image prompt (commands never see captions).
        pictures = filters.PHOTO | filters.Document.IMAGE
        app.add_handler(
            MessageHandler(
                _NEW_MESSAGES & pictures & filters.CaptionRegex(_IMAGINE_CAPTION),
                self._entrance(self.picture_prompt),
            )
        )
        private = _NEW_MESSAGES & filters.ChatType.PRIVATE
        app.add_handler(
            MessageHandler(private & filters.TEXT & ~filters.COMMAND, self._entrance(self.private_text))
        )
        # In a private chat, any caption is a prompt too (as any text is): the picture is its start.
        app.add_handler(
            MessageHandler(
                private & pictures & filters.CAPTION & ~filters.CaptionRegex(r"^/"),
                self._entrance(self.private_picture),
            )
        )
        app.add_handler(MessageHandler(private & filters.COMMAND, self._entrance(self.unknown_command)))
        app.add_handler(CallbackQueryHandler(self._entrance(self.button)))
        app.add_error_handler(self.error)

    def _entrance(self, handler: Handler) -> Callable[[Update, Context], Coroutine[Any, Any, None]]:
        """`handler`, for those the access rule admits; a polite refusal for the rest."""

        async def admitted(update: Update, context: Context) -> None:
            user, chat = update.effective_user, update.effective_chat
            if user is None or chat is None:
                return
            try:
                self._policy.check(Place(user.id, chat.id, private=False))
            except UserFacingError:
                logger.info("refused telegram user %s in chat %s", user.id, chat.id)
                # One polite line whatever the reason: the allowlists are the operator's business.
                await self._say(update, texts.not_allowed_text())
                return
            requester = Requester(TELEGRAM, str(chat.id), str(user.id), user.username or user.full_name)
            caller = Caller(requester, self._policy.is_admin(user.id))
            try:
                await self._commands.admit(caller)
            except UserFacingError as error:  # banned: the refusal says so, with the reason
                logger.info("refused telegram user %s in chat %s: banned", user.id, chat.id)
                await self._say(update, str(error))
                return
            await handler(update, caller)

        return admitted

    # -- messages -------------------------------------------------------------------------------
    async def command(self, update: Update, caller: Caller) -> None:
        message = _message(update)
        name, argument = _command(message)
        # "/imagine ..." written as a reply to a picture starts from that picture.
        picture = message.reply_to_message if name == "imagine" else None

        async def call() -> Answer:
            image = None if picture is None else await self._picture_bytes(picture)
            return await self._commands.text_command(caller, name, argument, image)

        await self._answer(update, call)

    async def picture_prompt(self, update: Update, caller: Caller) -> None:
        message = _message(update)
        name, argument = _command(message, caption=True)
        if name != "imagine" or not _addressed_to_me(message, caption=True):
            return

        async def call() -> Answer:
            image = await self._picture_bytes(message)
            return await self._commands.text_command(caller, "imagine", argument, image)

        await self._answer(update, call)

    async def private_picture(self, update: Update, caller: Caller) -> None:
        message = _message(update)

        async def call() -> Answer:
            image = await self._picture_bytes(message)
            return await self._commands.text_command(caller, "imagine", message.caption or "", image)

        await self._answer(update, call)

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

    async def private_text(self, update: Update, caller: Caller) -> None:
        text = _message(update).text or ""
        await self._answer(update, lambda: self._commands.text_command(caller, "imagine", text))

    async def help(self, update: Update, caller: Caller) -> None:
        await self._render(update, self._help)

    async def unknown_command(self, update: Update, caller: Caller) -> None:
        message = _message(update)
        command = (message.text or "").split(maxsplit=1)[0]
        if "@" in command and command.partition("@")[2].lower() != (message.get_bot().username or "").lower():
            return  # addressed to another bot
        await _reply(message, f"I don't know {command}. Send /help for what I can do.")

    async def button(self, update: Update, caller: Caller) -> None:
        query = update.callback_query
        assert query is not None
        press = ButtonPress.parse(query.data) or SettingPress.parse(query.data)
        if press is None or not _is_on_its_message(query):
            await query.answer(UNKNOWN_BUTTON, show_alert=True)
            return
        if isinstance(press, SettingPress) and not _is_menu_of(query):
            # A group sees everyone's /settings: a press would show the presser's settings in another's.
            await query.answer(OTHERS_MENU, show_alert=True)
            return
        await self._answer(update, lambda: self._commands.press(caller, press))

    # -- answers --------------------------------------------------------------------------------
    async def _answer(self, update: Update, call: Callable[[], Awaitable[Answer]]) -> None:
        try:
            answer = await call()
        except UserFacingError as error:
            await self._say(update, str(error))
            return
        await self._render(update, answer)

    async def _render(self, update: Update, answer: Answer) -> None:
        query, message = update.callback_query, update.effective_message
        if isinstance(answer, Queued):
            await self._queued(update, answer)
        elif isinstance(answer, Reply):
            assert message is not None
            await _reply(message, answer.text, reply_markup=markup(answer.buttons))
        elif isinstance(answer, Shown):
            assert message is not None
            await self._presenter.post_image(answer.job, reply_to=message.message_id)
        elif isinstance(answer, SettingsShown):
            await self._settings(update, answer)
        elif isinstance(answer, Picture):
            assert query is not None and update.effective_chat is not None
            await query.answer("Sending the original PNG…")
            caption = f"Original PNG of job #{answer.job.id} (lossless)."
            if answer.others:  # a set: an album of the PNG files
                files = [InputMediaDocument(p.png, filename=p.filename) for p in (answer, *answer.others)]
                await query.get_bot().send_media_group(
                    update.effective_chat.id,
                    files,
                    caption=caption,
                    reply_parameters=_reply_parameters(message),
                )
                return
            await query.get_bot().send_document(
                update.effective_chat.id,
                document=InputFile(answer.png, filename=answer.filename),
                caption=caption,
                reply_parameters=_reply_parameters(message),
            )
        elif isinstance(answer, Details):
            assert query is not None and message is not None
            await query.answer()
            await _reply(message, answer.text)
        else:
            assert query is not None
            await self._delete(query, answer.job)

    async def _queued(self, update: Update, queued: Queued) -> None:
        query, message = update.callback_query, update.effective_message
        if query is not None:
            try:  # queued either way: a failed answer must not reach the "try again" error reply
                lead = "Queued as" if queued.created else "Already queued as"
                await query.answer(f"{lead} job #{queued.job.id}.")
            except TelegramError as error:
                logger.warning(
                    "job=%s queued, but the button press was not answered: %s", queued.job.id, error
                )
            if not queued.created:
                return
        if message is not None:
            # Answer at once with the queue position and ETA (see bot/telegram/acknowledgements.py).
            logger.info("job=%s queued from telegram chat %s", queued.job.id, message.chat_id)
            await self._acks.acknowledge(message, queued)
            return
        chat = update.effective_chat  # a press on a message too old for Telegram to include
        assert chat is not None
        text = texts.queued_text(queued)
        try:
            status = await chat.send_message(text)
        except TelegramError as error:  # queued all the same: never invite a second press
            logger.warning("job=%s queued, but the answer was not sent: %s", queued.job.id, error)
            return
        await self._presenter.attach_status(queued.job, status.message_id, text)

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
        await query.answer(f"Deleted job #{job.id}'s image.")
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


def _is_menu_of(query: CallbackQuery) -> bool:
    """Whether the pressed settings menu answers the presser's own /settings (when Telegram says)."""
    message = query.message
    asked = message.reply_to_message if isinstance(message, Message) else None
    return asked is None or asked.from_user is None or asked.from_user.id == query.from_user.id


def _command(message: Message, *, caption: bool = False) -> tuple[str, str]:
    """The command's name (without /, or @bot) and the text after it (in the caption with `caption`)."""
    text = (message.caption if caption else message.text) or ""
    entities = message.caption_entities if caption else message.entities
    for entity in entities:
        if entity.type == "bot_command" and entity.offset == 0:
            command = message.parse_caption_entity(entity) if caption else message.parse_entity(entity)
            return command[1:].partition("@")[0].lower(), text[len(command) :].strip()
    command, _, argument = text.partition(" ")
    return command[1:].partition("@")[0].lower(), argument.strip()


def _addressed_to_me(message: Message, *, caption: bool = False) -> bool:
    """Whether a command is for this bot: "/imagine" or "/imagine@thisbot", not "@otherbot"."""
    command = ((message.caption if caption else message.text) or "").split(maxsplit=1)[0]
    target = command.partition("@")[2]
    return not target or target.lower() == (message.get_bot().username or "").lower()


def _reply_parameters(message: object) -> ReplyParameters | None:
    if not isinstance(message, Message):
        return None
    return ReplyParameters(message_id=message.message_id, allow_sending_without_reply=True)


async def _reply(message: Message, text: str, **kwargs: Any) -> Message:
    """Plain text (no parse_mode: the text may hold user input), quoting the user's message."""
    return await message.get_bot().send_message(
        message.chat_id, text[:MAX_MESSAGE], reply_parameters=_reply_parameters(message), **kwargs
    )
