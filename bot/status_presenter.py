"""A job's life on a chat platform, written once for every platform.

The user's command opens a status line (Discord: the deferred interaction response; Telegram: the reply
to the command). While the job waits and runs, the line shows `JobView.status_line`, edited at most once
per interval (`bot.status_throttle`). Then the outcome: a finished picture is posted to the chat with its
buttons and, once the delivery is recorded, the status line is tidied (`clean_up`); a failure (with its
Try again button) or a cancellation replaces the status line, or is posted in the chat when no status
line can show it. A job that ends before its status line is opened (a fast job) is remembered, so the
late line shows the end at once.

A platform subclasses `StatusPresenter` and implements the primitives (`_open_line`, `_edit`, `_post_text`,
`_post_picture`, `_tidy`, `_edit_interval`); the subclass is its `bot.delivery.Presenter`.
"""

from __future__ import annotations

import abc
import functools
from collections import OrderedDict
from collections.abc import Sequence

from bot.job_view import ButtonAction, ButtonSpec, JobView
from bot.status_throttle import StatusThrottle
from storage.jobs import Job, Platform

REMEMBERED_ENDINGS = 1000


class StatusPresenter(abc.ABC):
    platform: Platform
    result_actions: tuple[ButtonAction, ...]  # the buttons under a finished picture

    def __init__(self) -> None:
        self._throttle = StatusThrottle()
        # The last words of jobs whose outcome is out, for a status line opened after that.
        self._endings: OrderedDict[int, str] = OrderedDict()
        # Outcomes posted whose status line still has to be tidied (see clean_up).
        self._to_tidy: dict[int, str] = {}

    # -- what a platform implements -------------------------------------------------------------
    @abc.abstractmethod
    def _open_line(self, job: Job) -> bool:
        """Whether `job` has a status line this process can edit (restored from its row if need be)."""

    @abc.abstractmethod
    async def _edit(self, job: Job, text: str, *, buttons: Sequence[ButtonSpec], progress: bool) -> bool:
        """Edit the status line; True if it shows `text` now. `progress`: a courtesy that may be dropped."""

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

    def _close_line(self, job_id: int) -> None:
        """The status line is done with (the subclass forgets its handle too)."""
        self._throttle.forget(job_id)

    def _job_ending(self, job: Job) -> None:
        """The outcome is about to be posted: no more progress edits (or activity)."""
        self._throttle.forget(job.id)

    def _running(self, job: Job) -> None:  # noqa: B027 (a hook; most platforms need nothing here)
        """A progress view of a job: a platform may show activity besides the line."""

    # -- bot.delivery.Presenter -----------------------------------------------------------------
    async def show_progress(self, view: JobView) -> None:
        self._running(view.job)
        if self._open_line(view.job):
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

    # -- for the subclass -----------------------------------------------------------------------
    async def _show(
        self, job: Job, text: str, *, final: bool = False, buttons: Sequence[ButtonSpec] = ()
    ) -> bool:
        """`text` on the job's status line, throttled unless `final`."""
        edit = functools.partial(self._edit, job, buttons=buttons, progress=not final)
        return await self._throttle.update(
            job.id, text, edit, interval_s=self._edit_interval(job), final=final, force=bool(buttons)
        )

    async def _finish(self, job: Job, text: str, buttons: Sequence[ButtonSpec] = ()) -> bool:
        """Show a job's last words on its status line and close it; False if no line could show them."""
        self._remember_ending(job.id, text)
        if not self._open_line(job):
            return False
        shown = await self._show(job, text, final=True, buttons=buttons)
        self._close_line(job.id)
        return shown

    def _ending(self, job_id: int) -> str | None:
        """The last words of a job whose outcome is out already."""
        return self._endings.get(job_id)

    def _remember_ending(self, job_id: int, text: str) -> None:
        self._endings[job_id] = text
        while len(self._endings) > REMEMBERED_ENDINGS:
            self._endings.popitem(last=False)
