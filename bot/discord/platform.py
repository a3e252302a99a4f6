"""Discord as the rest of majicbot sees it (light: discord.py is imported only by the frontend)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.discord import DISCORD
from bot.discord.settings import DiscordSettings
from bot.platforms import PlatformSpec
from bot.token_check import NETWORK_ERRORS, TokenVerdict, ask, unreachable

if TYPE_CHECKING:
    from bot.frontend import Frontend
    from bot.service import BotService
    from bot.settings import LimitsSettings

API_BASE = "https://discord.com/api/v10"


def _frontend(settings: DiscordSettings, service: BotService, limits: LimitsSettings) -> Frontend:
    from bot.discord.frontend import DiscordFrontend

    return DiscordFrontend(settings, service, limits)


async def check_token(settings: DiscordSettings) -> TokenVerdict:
    """``GET {api_base_url}/users/@me`` as the bot."""
    assert settings.token is not None
    base = (settings.api_base_url or API_BASE).rstrip("/")
    headers = {"Authorization": f"Bot {settings.token.get_secret_value()}"}
    fix = (
        "check discord.token or MAJICBOT_DISCORD_TOKEN "
        "(Developer Portal > your application > Bot > Reset Token)"
    )
    try:
        answer = await ask("GET", f"{base}/users/@me", headers=headers)
    except NETWORK_ERRORS as error:
        return unreachable("Discord", base, error, "discord.api_base_url")
    if answer.status == 401:
        return TokenVerdict(False, f"Discord rejected the token (401 Unauthorized); {fix}")
    if answer.status != 200 or not answer.body:
        return TokenVerdict(False, f"Discord answered {answer.status}; try again later or {fix}")
    return TokenVerdict(True, f"{answer.body.get('username', '?')} (id {answer.body.get('id', '?')})")


PLATFORM = PlatformSpec(
    name=DISCORD,
    settings=DiscordSettings,
    token_variable="MAJICBOT_DISCORD_TOKEN",
    frontend=_frontend,
    check_token=check_token,
    noisy_loggers=("discord.gateway", "discord.http"),
)
