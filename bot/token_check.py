"""What a platform's token check (`majicbot doctor`) returns, and the HTTP pieces every check shares.

Each platform asks its own API whether a bot token is valid, without starting a bot (its
`PlatformSpec.check_token`, in `bot/<platform>/platform.py`), honouring the configured API base URLs
(a self-hosted server, a proxy, the tests' emulators). The token never appears in what is returned:
some platforms put it in the URL, so errors are described (`network_problem`), not echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """A platform API's answer to a check: the HTTP status and the JSON object it sent ({} for
    anything else: an error page, an empty body)."""

    status: int
    body: Mapping[str, Any] = field(default_factory=dict)


async def ask(method: str, url: str, *, headers: Mapping[str, str] | None = None) -> ApiAnswer:
    """One request of a token check, bounded by `TIMEOUT_S`; raises one of `NETWORK_ERRORS` when the
    platform cannot be reached (describe it with `unreachable`)."""
    async with check_session() as session, session.request(method, url, headers=headers) as response:
        try:
            body = await response.json(content_type=None)
        except ValueError:  # not JSON: the status says enough
            body = None
        return ApiAnswer(response.status, body if isinstance(body, dict) else {})


def unreachable(platform: str, base_url: str, error: BaseException, setting: str) -> TokenVerdict:
    """The verdict when `platform`'s API at `base_url` could not be asked (`error`, one of
    `NETWORK_ERRORS`), naming the `setting` that points the bot elsewhere (a proxy, a local server)."""
    return TokenVerdict(
        False,
        f"cannot reach {platform} at {origin(base_url)} ({network_problem(error)}); "
        f"check the network or {setting}",
    )
