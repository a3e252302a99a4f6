"""A job's life on a chat platform, written once for every platform.

The user's command opens a status line (Discord: the deferred interaction response; Telegram: the reply
to the command), handed over with `attach_status`. While the job waits and runs, the line shows
`JobView.status_line`, edited at most once per interval (`bot.status_throttle`). Then the outcome: a
finished picture is posted to the chat with its buttons and, once the delivery is recorded, the status
line is tidied (`clean_up`); a failure (with its Try again button) or a cancellation replaces the status
line, or is posted in the chat when no status line can show it. A job that ends before its status line
is opened (a fast job) is remembered, so the late line shows the end at once.

The status line is kept in the job row too (`bot.status_lines`), so another chat process, or this one
after a restart, keeps editing it while its token lives. While a job runs, a platform may repeat a
"busy" signal beside the line (`activity_every_s`, `bot.keep_alive`).

A platform subclasses `StatusPresenter` and implements the primitives (`_edit`, `_post_text`,
`_post_picture`, `_tidy`, `_edit_interval`, and `_signal_activity` if it has such a signal); the subclass
is its `bot.delivery.Presenter`.
"""

from __future__ import annotations

import abc
import functools
import logging
from collections import OrderedDict
from collections.abc import Sequence

from bot import texts
from bot.job_view import ButtonAction, ButtonSpec, JobView
from bot.keep_alive import KeepAlive
from bot.service import BotService
from bot.status_lines import StatusLine, StatusLines
from bot.status_throttle import StatusThrottle
from storage.jobs import Job, JobStatus, Platform

logger = logging.getLogger(__name__)

REMEMBERED_ENDINGS = 1000
ACTIVITY_MAX_S = 30 * 60.0  # a job whose outcome never reaches us must not signal forever


class StatusPresenter(abc.ABC):
    platform: Platform
    result_actions: tuple[ButtonAction, ...]  # the buttons under a finished picture
    activity_every_s: float | None = None  # a "busy" signal's repeat interval, if the platform has one

    def __init__(
        self,
        service: BotService,
        *,
        token_key: str | None = None,
        token_lifetime_s: float | None = None,
    ) -> None:
        """`token_key` seals status-line tokens in job rows; `token_lifetime_s`: how long a token can
        edit its line (None: lines need no token and never expire)."""
        self._service = service
        self._throttle = StatusThrottle()
        self._lines = StatusLines(service, token_key=token_key, token_lifetime_s=token_lifetime_s)
        self._activity = KeepAlive(every_s=self.activity_every_s or 0.0, max_s=ACTIVITY_MAX_S)
        # The last words of jobs whose outcome is out, for a status line opened after that.
        self._endings: OrderedDict[int, str] = OrderedDict()
        # Outcomes posted whose status line still has to be tidied (see clean_up).
        self._to_tidy: dict[int, str] = {}
        self._started = False  # the frontend is running (`bot.frontend.ChatFrontend` says so)

    # -- what a platform implements -------------------------------------------------------------
    @abc.abstractmethod
    async def _edit(
        self, job: Job, line: StatusLine, text: str, *, buttons: Sequence[ButtonSpec], progress: bool
    ) -> bool:
        """Edit the status line (setting `line.message_id` if it was not known); True if it shows
        `text` now. `progress`: a courtesy that may be dropped. A line that can never be edited again
        is closed (`_close_line`)."""

    @abc.abstractmethod
    async def _post_text(self, job: Job, text: str, buttons: Sequence[ButtonSpec]) -> None:
        """A notice in the job's chat (when no status line can show it)."""

    @abc.abstractmethod
    async def _post_picture(self, view: JobView) -> str | None:
        """Post the finished picture with `view.buttons`; its message id, or None if it never can be."""

    @abc.abstractmethod
    async def _tidy(self, job: Job, ending: str) -> None:
        """After the outcome is recorded: point the status line at it, or take the line away."""

    @abc.abstractmethod
    def _edit_interval(self, job: Job) -> float: ...

    async def _signal_activity(self, job: Job) -> bool:
        """Show the platform's "busy" signal once (with `activity_every_s`); False once it never can."""
        return False

    def _job_ending(self, job: Job) -> None:
        """The outcome is about to be posted: no more progress edits (or activity)."""
        self._require_started()
        self._activity.stop(job.id)
        self._throttle.forget(job.id)

    def _running(self, job: Job) -> None:
        """A progress view of a job: repeat the platform's busy signal while it runs."""
        self._require_started()
        if self.activity_every_s is not None and job.status is JobStatus.RUNNING:
            self._activity.start(job.id, functools.partial(self._signal_activity, job))

    # -- from the adapter's command handlers ----------------------------------------------------
    async def attach_status(
        self,
        job: Job,
        message_id: int | str | None,
        text: str,
        *,
        token: str | None = None,
        opener: object = None,
    ) -> None:
        """A command's answer is `job`'s status line from now on: a message posted saying `text`
        (`message_id`), or an answer still to show it (`opener`, and the `token` that edits it). The
        newest answer shows the job; a job whose outcome is out already has its line tidied at once."""
        self._close_line(job.id)
        line = StatusLine(None if message_id is None else str(message_id), token, opener)
        self._lines.attach(job.id, line)
        ending = self._ending(job.id)
        if ending is not None:  # a very fast job: its outcome beat its status line
            await self._tidy(job, ending)
        elif line.message_id is None:
            await self._show(job, text)
        else:
            self._throttle.mark_shown(job.id, text)
            await self._lines.store(job, line)

    async def signal_activity(self, job: Job) -> None:
        """Show the platform's "busy" signal once in the job's chat, if it has one (a courtesy)."""
        if self.activity_every_s is None:
            return
        try:
            await self._signal_activity(job)
        except Exception as error:
            logger.debug("job=%d busy signal failed: %s", job.id, error)

    def mark_started(self) -> None:
        self._started = True

    async def close(self) -> None:
        """Stop waiting edits and signals (on shutdown)."""
        self._started = False
        self._lines.clear()
        await self._activity.close()
        await self._throttle.close()

    # -- bot.delivery.Presenter -----------------------------------------------------------------
    async def show_progress(self, view: JobView) -> None:
        self._running(view.job)
        if self._open_line(view.job) is not None:
            await self._show(view.job, view.status_line)

    async def deliver(self, view: JobView) -> str | None:
        job = view.job
        self._open_line(job)
        self._job_ending(job)
        message_id = await self._post_picture(view)
        if message_id is not None:
            ending = f"{view.status_line} It is posted in this channel."
            self._remember_ending(job.id, ending)
            self._to_tidy[job.id] = ending
        return message_id

    async def report_failure(self, view: JobView) -> None:
        job = view.job
        self._open_line(job)
        self._job_ending(job)
        if not await self._finish(job, view.status_line, view.buttons):
            await self._post_text(job, view.status_line, view.buttons)
            self._to_tidy[job.id] = view.status_line

    async def report_cancelled(self, view: JobView) -> None:
        self._open_line(view.job)
        self._job_ending(view.job)
        await self._finish(view.job, view.status_line)

    async def clean_up(self, job: Job) -> None:
        ending = self._to_tidy.pop(job.id, None)
        if ending is not None:
            await self._tidy(job, ending)

    async def report_ready_later(self, job: Job) -> None:
        self._require_started()
        self._close_line(job.id)
        await self._post_text(job, texts.ready_later_text(job), ())

    # -- for the subclass -----------------------------------------------------------------------
    def _open_line(self, job: Job) -> StatusLine | None:
        """The job's status line, if this process can edit it (`StatusLines.get`)."""
        return self._lines.get(job)

    def _close_line(self, job_id: int) -> None:
        """The status line is done with: forget it and its waiting edits."""
        self._lines.forget(job_id)
        self._throttle.forget(job_id)

    async def _show(
        self, job: Job, text: str, *, final: bool = False, buttons: Sequence[ButtonSpec] = ()
    ) -> bool:
        """`text` on the job's status line, throttled unless `final`."""
        edit = functools.partial(self._try_edit, job, buttons=buttons, progress=not final)
        return await self._throttle.update(
            job.id, text, edit, interval_s=self._edit_interval(job), final=final, force=bool(buttons)
        )

    async def _finish(self, job: Job, text: str, buttons: Sequence[ButtonSpec] = ()) -> bool:
        """Show a job's last words on its status line and close it; False if no line could show them."""
        self._remember_ending(job.id, text)
        if self._open_line(job) is None:
            return False
        shown = await self._show(job, text, final=True, buttons=buttons)
        self._close_line(job.id)
        return shown

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError(
                f"The {self.platform} frontend is not running; start it before delivering jobs."
            )

    def _ending(self, job_id: int) -> str | None:
        """The last words of a job whose outcome is out already."""
        return self._endings.get(job_id)

    def _remember_ending(self, job_id: int, text: str) -> None:
        self._endings[job_id] = text
        while len(self._endings) > REMEMBERED_ENDINGS:
            self._endings.popitem(last=False)

    # -- internals ------------------------------------------------------------------------------
    async def _try_edit(self, job: Job, text: str, *, buttons: Sequence[ButtonSpec], progress: bool) -> bool:
        line = self._lines.get(job)
        if line is None:
            return False
        if self._lines.expired(line):
            self._close_line(job.id)  # the outcome still arrives in the chat
            return False
        if not await self._edit(job, line, text, buttons=buttons, progress=progress):
            return False
        await self._lines.store(job, line)  # once its id is known
        return True
