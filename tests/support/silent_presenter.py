"""A `StatusPresenter` whose platform primitives do nothing, for tests of the core around it."""

from __future__ import annotations

from collections.abc import Sequence

from bot.job_view import ButtonAction, ButtonSpec, JobView
from bot.status_lines import StatusLine
from bot.status_presenter import StatusPresenter
from storage.jobs import Job, Platform


class SilentPresenter(StatusPresenter):
    """Every edit "succeeds", nothing is posted, and nothing is ever tidied."""

    platform = Platform("chat")
    result_actions = (ButtonAction.REROLL,)

    async def _edit(
        self, job: Job, line: StatusLine, text: str, *, buttons: Sequence[ButtonSpec], progress: bool
    ) -> bool:
        return True

    async def _post_text(self, job: Job, text: str, buttons: Sequence[ButtonSpec]) -> None:
        pass

    async def _post_picture(self, view: JobView) -> str | None:
        return None

    async def _tidy(self, job: Job, ending: str) -> None:
        pass

    def _edit_interval(self, job: Job) -> float:
        return 0.0
