"""The Telegram adapter as `bot/app.py` sees it: a PTB Application that we start and stop ourselves.

We never call `run_polling()`: it owns the event loop and the signals, and majicbot runs Discord, the
delivery loop and the engine beside Telegram in one loop. So `start()` does what `run_polling()`
would (initialize, the post-init setup, start, start polling or the webhook) and `stop()` undoes it.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from telegram import Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import ApplicationBuilder

from bot.access import AccessPolicy
from bot.acknowledgements import Acknowledger
from bot.chat_commands import ChatCommands
from bot.frontend import ChatFrontend, FrontendStartError
from bot.service import BotService
from bot.settings import LimitsSettings
from bot.telegram.handlers import COMMANDS, TelegramApp, TelegramHandlers
from bot.telegram.presenter import TelegramPresenter, may_retry
from bot.telegram.rate_limiter import PriorityRateLimiter
from bot.telegram.settings import TelegramSettings
from bot.token_check import origin

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = (Update.MESSAGE, Update.CALLBACK_QUERY)
# PTB names its polling task; it ends only when told to, or on an error PTB will not retry (InvalidToken).
_POLLING_TASK_NAME = "Updater:start_polling:polling_task"
# PTB and httpx log request URLs, and the Bot API puts the token in the URL path; our own handlers
# log PTB's errors.
_TOKEN_LEAKING_LOGGERS = ("telegram", "httpx", "httpcore", "bot.telegram")


class TelegramFrontend(ChatFrontend[TelegramPresenter]):
    name = "telegram"

    def __init__(self, settings: TelegramSettings, service: BotService, limits: LimitsSettings) -> None:
        if settings.token is None:
            raise FrontendStartError("telegram.token is not set; set it or MAJICBOT_TELEGRAM_TOKEN.")
        self._settings = settings
        token = settings.token.get_secret_value()
        secrets = [token]
        if settings.webhook_secret is not None:
            secrets.append(settings.webhook_secret.get_secret_value())
        super().__init__(secrets, _TOKEN_LEAKING_LOGGERS)  # before PTB logs its URLs
        self._app: TelegramApp = (
            ApplicationBuilder()
            .token(token)
            .base_url(settings.base_url)
            .base_file_url(settings.base_file_url)
            .rate_limiter(PriorityRateLimiter())
            .concurrent_updates(True)
            .build()
        )
        self._presenter = TelegramPresenter(self._app.bot, service, settings)
        self._acks = Acknowledger(
            self._presenter, self._presenter.answer, retryable=may_retry, batch_s=settings.group_reply_batch_s
        )
        policy = AccessPolicy(
            admin_user_ids=frozenset(settings.admin_user_ids),
            allowed_user_ids=frozenset(settings.allowed_user_ids),
            allowed_chat_ids=frozenset(settings.allowed_chat_ids),
        )
        TelegramHandlers(ChatCommands(service, limits), policy, self._presenter, self._acks).register(
            self._app
        )

    async def _connect(self) -> None:
        """Check the token (getMe), register the commands, then receive updates."""
        try:
            await self._app.initialize()
        except InvalidToken:
            raise FrontendStartError(
                "Telegram rejected the bot token (getMe answered 401 Unauthorized or 404). "
                "Check telegram.token or MAJICBOT_TELEGRAM_TOKEN."
            ) from None
        except TelegramError as error:
            raise FrontendStartError(
                f"Cannot reach the Telegram Bot API at {origin(self._settings.base_url)} "
                f"({self._redactor.redact(str(error))}). Check the network or telegram.base_url."
            ) from None
        try:
            await self._app.bot.set_my_commands(COMMANDS)
            await self._app.start()
            await self._start_receiving()
        except TelegramError as error:
            await self._shutdown()
            raise FrontendStartError(
                f"Telegram refused to start the bot ({self._redactor.redact(str(error))}). "
                "Check the [telegram] settings."
            ) from None
        logger.info("Telegram bot @%s is running (%s)", self._app.bot.username, self._settings.mode)

    async def _stop_receiving(self) -> None:
        await self._acks.close()

    async def _disconnect(self) -> None:
        """Stop receiving updates, let in-flight handlers finish, close connections."""
        await self._shutdown()
        logger.info("Telegram bot stopped")

    @property
    def is_running(self) -> bool:
        updater = self._app.updater
        receiving = self._app.running and updater is not None and updater.running
        return bool(receiving and not self._fatal.is_set())

    async def _start_receiving(self) -> None:
        updater = self._app.updater
        assert updater is not None
        if self._settings.mode == "polling":
            await updater.start_polling(
                allowed_updates=list(ALLOWED_UPDATES), error_callback=self._polling_error
            )
            self._watch_polling()
            return
        assert self._settings.webhook_url is not None and self._settings.webhook_secret is not None
        await updater.start_webhook(
            listen=self._settings.webhook_listen,
            port=self._settings.webhook_port,
            url_path=urlsplit(self._settings.webhook_url).path.lstrip("/"),
            webhook_url=self._settings.webhook_url,
            secret_token=self._settings.webhook_secret.get_secret_value(),
            allowed_updates=list(ALLOWED_UPDATES),
        )

    def _polling_error(self, error: TelegramError) -> None:
        # PTB retries these (timeouts, 5xx, a dropped connection) with a growing pause; one line each.
        logger.warning(
            "receiving Telegram updates failed, retrying: %s: %s",
            type(error).__name__,
            self._redactor.redact(str(error)),
        )

    def _watch_polling(self) -> None:
        """Notice the polling task ending while we did not stop it: PTB then leaves the process up
        but deaf (it retries timeouts and 5xx itself, but gives up on a rejected token)."""
        polling = next((t for t in asyncio.all_tasks() if t.get_name() == _POLLING_TASK_NAME), None)
        if polling is None:
            logger.warning("cannot watch Telegram polling: PTB's polling task was not found")
            return
        self._watch_receiver(polling)

    def _ended_reason(self, error: BaseException | None) -> str:
        if isinstance(error, InvalidToken):
            return (
                "Telegram rejected the bot token while polling (401 Unauthorized): it was revoked or "
                "changed. Set the new token in telegram.token or MAJICBOT_TELEGRAM_TOKEN, then restart."
            )
        cause = (
            "it was cancelled" if error is None else self._redactor.redact(f"{type(error).__name__}: {error}")
        )
        return f"receiving Telegram updates stopped ({cause}); restart majicbot."

    async def _shutdown(self) -> None:
        updater = self._app.updater
        if updater is not None and updater.running:
            try:
                await updater.stop()
            except TelegramError as error:  # the polling task's own end (e.g. the token was revoked)
                logger.info("Telegram polling had ended: %s", self._redactor.redact(str(error)))
        if self._app.running:
            await self._app.stop()
        await self._app.shutdown()
