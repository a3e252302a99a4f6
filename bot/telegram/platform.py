"""Telegram as the rest of majicbot sees it (light: python-telegram-bot is imported only by the frontend)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.platforms import PlatformSpec
from bot.telegram import TELEGRAM
from bot.telegram.settings import TelegramSettings
from bot.token_check import NETWORK_ERRORS, TokenVerdict, ask, unreachable

if TYPE_CHECKING:
    from bot.frontend import Frontend
    from bot.service import BotService
    from bot.settings import LimitsSettings


def _frontend(settings: TelegramSettings, service: BotService, limits: LimitsSettings) -> Frontend:
    from bot.telegram.frontend import TelegramFrontend

    return TelegramFrontend(settings, service, limits)


async def check_token(settings: TelegramSettings) -> TokenVerdict:
    """getMe at ``{base_url}{token}/getMe`` (the token is in the URL: errors never show it)."""
    assert settings.token is not None
    url = f"{settings.base_url}{settings.token.get_secret_value()}/getMe"
    fix = "check telegram.token or MAJICBOT_TELEGRAM_TOKEN (BotFather's /token shows it)"
    try:
        answer = await ask("POST", url)
    except NETWORK_ERRORS as error:
        return unreachable("the Telegram Bot API", settings.base_url, error, "telegram.base_url")
    status, body = answer.status, answer.body
    if status in (401, 404):
        return TokenVerdict(False, f"Telegram rejected the token ({status}); {fix}")
    result = body.get("result")
    if status != 200 or not body.get("ok") or not isinstance(result, dict):
        return TokenVerdict(False, f"the Telegram Bot API answered {status}; try again later or {fix}")
    return TokenVerdict(True, f"@{result.get('username', '?')}")


PLATFORM = PlatformSpec(
    name=TELEGRAM,
    settings=TelegramSettings,
    token_variable="MAJICBOT_TELEGRAM_TOKEN",
    frontend=_frontend,
    check_token=check_token,
    noisy_loggers=("telegram.ext.Updater",),
)
