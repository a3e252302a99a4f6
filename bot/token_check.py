"""What a platform's token check (`majicbot doctor`) returns, and the HTTP pieces every check shares.

Each platform asks its own API whether a bot token is valid, without starting a bot (its
`PlatformSpec.check_token`, in `bot/<platform>/platform.py`), honouring the configured API base URLs
(a self-hosted server, a proxy, the tests' emulators). The token never appears in what is returned:
some platforms put it in the URL, so errors are described (`network_problem`), not echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

TIMEOUT_S = 15.0
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError)
"""What a check's request may raise when the platform cannot be reached or answers garbage."""


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    accepted: bool
    detail: str  # the bot's name when accepted; what is wrong and what to do when not


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """What the platform's API answered a check's request."""

    status: int
    body: object  # the decoded JSON of a 200 answer; None for any other status


def check_session(timeout_s: float = TIMEOUT_S) -> aiohttp.ClientSession:
    """A session for one check, bounded by `timeout_s` in all."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


def network_problem(error: BaseException) -> str:
    """What went wrong, in words that cannot contain the request URL (and so a token in it)."""
    # Not str(error): aiohttp puts the request URL in its messages.
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"connection failed: {error.os_error.strerror or type(error.os_error).__name__}"
    return type(error).__name__


def origin(url: str) -> str:
    """`scheme://host[:port]` of `url`: where a check went, without a path that may hold a token."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


async def ask_api(method: str, url: str, *, headers: Mapping[str, str] | None = None) -> ApiAnswer:
    """One request of a check, in a `check_session`: the status and, for a 200, the JSON body.
    Raises one of NETWORK_ERRORS when the platform cannot be reached or answers garbage."""
    async with check_session() as session, session.request(method, url, headers=headers) as response:
        body = await response.json(content_type=None) if response.status == 200 else None
        return ApiAnswer(response.status, body)


def unreachable(api: str, url: str, error: BaseException, setting: str) -> TokenVerdict:
    """The verdict when `api` ("Discord", "the Telegram Bot API") at `url` cannot be reached: the
    problem in words that cannot hold the token, and the `setting` that says where the API is."""
    return TokenVerdict(
        False,
        f"cannot reach {api} at {origin(url)} ({network_problem(error)}); check the network or {setting}",
    )
