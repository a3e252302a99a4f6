"""Asking each chat platform whether a bot token is valid (`majicbot doctor`), without starting a bot.

Telegram: `getMe`; Discord: `GET /users/@me` with `Authorization: Bot <token>`. Both honour the
configured API base URLs (a self-hosted Bot API server, a proxy, the tests' emulators). The token never
appears in what is returned: Telegram's URL contains it, so errors are described, not echoed.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

DISCORD_API_BASE = "https://discord.com/api/v10"
TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    accepted: bool
    detail: str  # the bot's name when accepted; what is wrong and what to do when not


async def check_telegram_token(token: str, base_url: str, *, timeout_s: float = TIMEOUT_S) -> TokenVerdict:
    """Call getMe at ``{base_url}{token}/getMe``."""
    url = f"{base_url}{token}/getMe"
    fix = "check telegram.token or MAJICBOT_TELEGRAM_TOKEN (BotFather's /token shows it)"
    try:
        async with _session(timeout_s) as session, session.post(url) as response:
            status = response.status
            body = await response.json(content_type=None) if status < 500 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return TokenVerdict(
            False,
            f"cannot reach the Telegram Bot API at {_origin(base_url)} ({_kind(error)}); "
            "check the network or telegram.base_url",
        )
    if status in (401, 404):
        return TokenVerdict(False, f"Telegram rejected the token ({status}); {fix}")
    if status != 200 or not isinstance(body, dict) or not body.get("ok"):
        return TokenVerdict(False, f"the Telegram Bot API answered {status}; try again later or {fix}")
    username = (body.get("result") or {}).get("username", "?")
    return TokenVerdict(True, f"@{username}")


async def check_discord_token(
    token: str, api_base_url: str | None, *, timeout_s: float = TIMEOUT_S
) -> TokenVerdict:
    """Call ``GET {api_base_url}/users/@me`` as the bot."""
    base = (api_base_url or DISCORD_API_BASE).rstrip("/")
    fix = (
        "check discord.token or MAJICBOT_DISCORD_TOKEN "
        "(Developer Portal > your application > Bot > Reset Token)"
    )
    try:
        async with (
            _session(timeout_s) as session,
            session.get(f"{base}/users/@me", headers={"Authorization": f"Bot {token}"}) as response,
        ):
            status = response.status
            body = await response.json(content_type=None) if status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return TokenVerdict(
            False,
            f"cannot reach Discord at {_origin(base)} ({_kind(error)}); "
            "check the network or discord.api_base_url",
        )
    if status == 401:
        return TokenVerdict(False, f"Discord rejected the token (401 Unauthorized); {fix}")
    if status != 200 or not isinstance(body, dict):
        return TokenVerdict(False, f"Discord answered {status}; try again later or {fix}")
    return TokenVerdict(True, f"{body.get('username', '?')} (id {body.get('id', '?')})")


def _session(timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


def _kind(error: BaseException) -> str:
    # Not str(error): aiohttp puts the request URL, and so Telegram's token, in its messages.
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"connection failed: {error.os_error.strerror or type(error.os_error).__name__}"
    return type(error).__name__


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
