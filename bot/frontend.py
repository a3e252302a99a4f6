"""What `bot/app.py` needs from a chat adapter.

Each platform's `PlatformSpec.frontend(settings, service, limits)` (`bot/platforms.py`) builds one;
`bot.app` calls it, and so imports the platform's library, only when the platform is enabled.
`ChatFrontend` is what every adapter's frontend shares: its presenter, the fatal reason, the loggers
scrubbed of its secrets, and the order of stopping.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from bot.delivery import Presenter
from bot.log_setup import SecretRedactor, guard_loggers
from bot.status_presenter import StatusPresenter

# Core modules that log what an adapter's calls raised (a platform's errors may quote its URLs).
CORE_LOGGERS = (
    "bot.status_presenter",
    "bot.status_lines",
    "bot.acknowledgements",
    "bot.keep_alive",
    "bot.flood_control",
)

PresenterT = TypeVar("PresenterT", bound=StatusPresenter)


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


class ChatFrontend(abc.ABC, Generic[PresenterT]):
    """The lifecycle every adapter's `Frontend` shares. A subclass sets `_presenter`, implements
    `_connect`, `_stop_receiving`, `_disconnect`, `_ended_reason` and `is_running`, and reports its
    receiver task with `_watch_receiver`."""

    name: str
    _presenter: PresenterT

    def __init__(self, secrets: Sequence[str], leaking_loggers: Sequence[str]) -> None:
        """`secrets` (the token...) are scrubbed from the records of `leaking_loggers` (the platform
        library's, which log request URLs and payloads at DEBUG) where the records are made, so no
        handler of anyone's ever sees them; call this before the library logs anything."""
        self._redactor = SecretRedactor(secrets)
        self._guarded_loggers = guard_loggers(self._redactor, (*leaking_loggers, *CORE_LOGGERS))
        self._fatal = FatalReason()
        self._stopping = False

    @property
    def presenter(self) -> PresenterT:
        return self._presenter

    async def start(self) -> None:
        """Log in, register the commands, begin receiving; the presenter works from then on."""
        await self._connect()
        self._presenter.mark_started()

    async def fatal_error(self) -> str:
        return await self._fatal.wait()

    async def stop(self) -> None:
        """Stop receiving and let answers in progress finish (bounded), stop showing jobs, then
        disconnect."""
        self._stopping = True
        try:
            await self._stop_receiving()
            await self._presenter.close()
            await self._disconnect()
        finally:
            for guarded in self._guarded_loggers:
                guarded.removeFilter(self._redactor)

    @abc.abstractmethod
    async def _connect(self) -> None:
        """`Frontend.start` on this platform: FrontendStartError with the fix when it cannot."""

    @abc.abstractmethod
    async def _stop_receiving(self) -> None:
        """Finish (bounded) the answers to what has come in."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close the platform's connections."""

    @abc.abstractmethod
    def _ended_reason(self, error: BaseException | None) -> str:
        """The fatal reason when the receiver ended by itself with `error` (None: it just ended)."""

    def _watch_receiver(self, receiver: asyncio.Task[object]) -> None:
        """`receiver` (the gateway, the polling) ends only when told to, or on an error that needs a
        person (a token revoked while running); then nothing else would notice, and the process
        would stay up, deaf."""
        receiver.add_done_callback(self._receiver_ended)

    def _receiver_ended(self, task: asyncio.Task[object]) -> None:
        if self._stopping or self._fatal.is_set():
            return
        self._fatal.set(self._ended_reason(None if task.cancelled() else task.exception()))
