"""What a platform's token check (`majicbot doctor`) returns, and the HTTP pieces every check shares.

Each platform asks its own API whether a bot token is valid, without starting a bot (its
`PlatformSpec.check_token`, in `bot/<platform>/platform.py`), honouring the configured API base URLs
(a self-hosted server, a proxy, the tests' emulators). The token never appears in what is returned:
some platforms put it in the URL, so errors are described (`network_problem`), not echoed.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

TIMEOUT_S = 15.0
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError)
"""What a check's request may raise when the platform cannot be reached or answers garbage."""


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    accepted: bool
    detail: str  # the bot's name when accepted; what is wrong and what to do when not


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
