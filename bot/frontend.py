"""What `bot/app.py` needs from a chat adapter.

Each platform's `PlatformSpec.frontend(settings, service, limits)` (`bot/platforms.py`) builds one;
`bot.app` calls it, and so imports the platform's library, only when the platform is enabled.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from bot.delivery import Presenter


class FrontendStartError(Exception):
    """The adapter cannot start (e.g. the platform rejected the token); the text says what to fix."""


class Frontend(Protocol):
    name: str

    @property
    def presenter(self) -> Presenter: ...

    async def start(self) -> None:
        """Log in, register commands, begin receiving updates; return once running.

        Raises FrontendStartError with an actionable sentence (never the token) on a wrong token.
        """
        ...

    async def stop(self) -> None:
        """Stop receiving, finish in-flight replies (bounded), close connections."""
        ...

    async def fatal_error(self) -> str:
        """Wait until the platform ends this adapter for good (a token rejected while running, a
        receiver that died) and return one line saying what happened and what to do.

        Never returns while the adapter works: transient errors (timeouts, 5xx, a dropped connection)
        are retried by the adapter. `bot.app` then ends the process with a non-zero exit, so a service
        manager can restart it.
        """
        ...

    @property
    def is_running(self) -> bool:
        """Connected and receiving updates (for /healthz)."""
        ...


class FatalReason:
    """Why an adapter ended for good (`Frontend.fatal_error`); the first reason given counts."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> str:
        await self._event.wait()
        return self.reason
