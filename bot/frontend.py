"""What `bot/app.py` needs from a chat adapter.

Each platform's `PlatformSpec.frontend(settings, service, limits)` (`bot/platforms.py`) builds one;
`bot.app` calls it, and so imports the platform's library, only when the platform is enabled.
`ChatFrontend` is what every adapter's frontend shares: its presenter, the fatal reason, the loggers
scrubbed of its secrets, the task that receives the platform's events, the answers still being
written, and the order of stopping.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar

from bot.answers_in_flight import AnswersInFlight
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
STOP_TIMEOUT_S = 10.0
"""How long stopping waits for the answers being written, and then for the receiver to end."""

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
    `_connect`, `_disconnect`, `_ended_reason` and `is_running` (and `_stop_receiving` if it must),
    and reports its receiver task with `_watch_receiver`, or has it run by `_start_receiver`. Where
    the platform's library answers each event in a task of its own, the handlers answer inside
    `_answers.tracking()`, so that stopping lets them finish."""

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
        self._answers = AnswersInFlight()
        self._receiver: asyncio.Task[object] | None = None  # started (and so awaited) by this frontend

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
        disconnect and wait (bounded) for the receiver to end."""
        self._stopping = True
        try:
            await self._stop_receiving()
            await self._answers.drain(STOP_TIMEOUT_S)
            await self._presenter.close()
            await self._disconnect()
            await self._receiver_finished(STOP_TIMEOUT_S)
        finally:
            for guarded in self._guarded_loggers:
                guarded.removeFilter(self._redactor)

    @abc.abstractmethod
    async def _connect(self) -> None:
        """`Frontend.start` on this platform: FrontendStartError with the fix when it cannot."""

    async def _stop_receiving(self) -> None:
        """Finish (bounded) what the platform's side needs before the answers in flight are drained
        (e.g. answers waiting in a batch); nothing by default."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close the platform's connections."""

    @abc.abstractmethod
    def _ended_reason(self, error: BaseException | None) -> str:
        """The fatal reason when the receiver ended by itself with `error` (None: it just ended)."""

    def _start_receiver(self, receiving: Coroutine[Any, Any, object], name: str) -> None:
        """Run `receiving` (a gateway connection: it returns only when closed) as this frontend's
        receiver: watched (`_watch_receiver`), and waited for when stopping, after `_disconnect`."""
        self._receiver = asyncio.create_task(receiving, name=name)
        self._watch_receiver(self._receiver)

    async def _until_ready(self, ready: Coroutine[Any, Any, object], within_s: float) -> str | None:
        """Wait for `ready` (the platform's "connected") while the receiver started by
        `_start_receiver` runs: None once ready, else why not ("the connection closed", in which case
        `_ended_reason` may have set the fatal reason, or "no answer" within `within_s`)."""
        assert self._receiver is not None, "start the receiver first"
        waiting = asyncio.ensure_future(ready)
        done, _ = await asyncio.wait(
            {self._receiver, waiting}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting in done:
            return None
        waiting.cancel()
        return "the connection closed" if self._receiver in done else "no answer"

    @property
    def _receiving(self) -> bool:
        """The receiver started by `_start_receiver` runs."""
        return self._receiver is not None and not self._receiver.done()

    async def _receiver_finished(self, within_s: float) -> None:
        """The receiver started here has ended once disconnected; its end (an error, a timeout) no
        longer matters then."""
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(receiver, within_s)

    def _watch_receiver(self, receiver: asyncio.Task[object]) -> None:
        """`receiver` (the gateway, the polling) ends only when told to, or on an error that needs a
        person (a token revoked while running); then nothing else would notice, and the process
        would stay up, deaf."""
        receiver.add_done_callback(self._receiver_ended)

    def _receiver_ended(self, task: asyncio.Task[object]) -> None:
        if self._stopping or self._fatal.is_set():
            return
        self._fatal.set(self._ended_reason(None if task.cancelled() else task.exception()))
