"""The status line's bookkeeping in `bot.status_presenter`, on a platform that records what it is asked.

The job rows are real (SQLite): a second presenter stands for another chat process, or this one after
a restart, that knows the line only from the row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bot import texts
from bot.job_view import ButtonAction, ButtonSpec, JobView, build_view
from bot.sealed_token import unseal
from bot.service import BotService
from bot.status_lines import StatusLine
from bot.status_presenter import StatusPresenter
from storage.images import ImageStore
from storage.jobs import Job, JobStatus, Platform
from storage.queue import JobQueue
from tests.support.new_jobs import NewJobFactory
from tests.support.services import build_service

CHAT = Platform("chat")  # a platform that records what it is asked

KEY = "the-bot-token-of-this-bot"
TOKEN = "interaction-token-abcdef"
FIRST_ID = "500"  # the id a deferred answer turns out to have on its first edit


Edit = tuple[str | None, str | None, str]  # message id, token, text


class RecordingPresenter(StatusPresenter):
    platform = CHAT
    result_actions = (ButtonAction.REROLL,)

    def __init__(
        self, service: BotService, *, token_key: str | None = None, token_lifetime_s: float | None = None
    ) -> None:
        super().__init__(service, token_key=token_key, token_lifetime_s=token_lifetime_s)
        self.edits: list[Edit] = []
        self.posted: list[str] = []
        self.tidied: list[str] = []
        self.mark_started()

    async def _edit(
        self, job: Job, line: StatusLine, text: str, *, buttons: Sequence[ButtonSpec], progress: bool
    ) -> bool:
        if line.message_id is None:
            line.message_id = FIRST_ID
        self.edits.append((line.message_id, line.token, text))
        return True

    async def _post_text(self, job: Job, text: str, buttons: Sequence[ButtonSpec]) -> None:
        self.posted.append(text)

    async def _post_picture(self, view: JobView) -> str | None:
        self.posted.append("picture")
        return "900"

    async def _tidy(self, job: Job, ending: str) -> None:
        self.tidied.append(ending)
        self._close_line(job.id)

    def _edit_interval(self, job: Job) -> float:
        return 0.0


@pytest.fixture
def service(queue: JobQueue, image_store: ImageStore) -> BotService:
    return build_service(queue, image_store)


@pytest.fixture
async def job(queue: JobQueue, make_new_job: NewJobFactory) -> Job:
    return (await queue.enqueue(make_new_job(platform=CHAT))).job


def running(job: Job, step: int) -> JobView:
    return build_view(dataclasses.replace(job, status=JobStatus.RUNNING, progress_step=step))


async def edits_elsewhere(service: BotService, job: Job, token_key: str | None = None) -> list[Edit]:
    """What another chat process, knowing the job only from its row, edits to show step 1."""
    elsewhere = RecordingPresenter(service, token_key=token_key, token_lifetime_s=60.0 if token_key else None)
    await elsewhere.show_progress(running(job, 1))
    return elsewhere.edits


async def test_a_posted_answer_is_stored_and_another_process_edits_that_message(
    queue: JobQueue, service: BotService, job: Job
) -> None:
    here = RecordingPresenter(service)
    await here.attach_status(job, 41, "Job #1 is queued.")
    assert here.edits == []  # the answer shows that text already
    stored = await queue.get(job.id)
    assert stored.status_message_id == "41" and stored.status_token is None

    assert await edits_elsewhere(service, stored) == [("41", None, running(stored, 1).status_line)]


async def test_a_token_line_is_stored_sealed_and_restored_only_while_its_token_lives(
    queue: JobQueue, service: BotService, job: Job
) -> None:
    here = RecordingPresenter(service, token_key=KEY, token_lifetime_s=60.0)
    await here.attach_status(job, None, "Job #1 is queued.", token=TOKEN, opener=object())
    assert here.edits == [(FIRST_ID, TOKEN, "Job #1 is queued.")]
    stored = await queue.get(job.id)
    assert stored.status_message_id == FIRST_ID
    assert stored.status_token is not None and TOKEN not in stored.status_token
    assert unseal(stored.status_token, KEY) == TOKEN
    assert stored.status_token_at is not None
    assert abs((datetime.now(UTC) - stored.status_token_at).total_seconds()) < 5

    assert await edits_elsewhere(service, stored, KEY) == [(FIRST_ID, TOKEN, running(stored, 1).status_line)]
    assert await edits_elsewhere(service, stored, "another-bot-token") == []

    old = datetime.now(UTC) - timedelta(seconds=61)
    await queue.set_status_message(job.id, FIRST_ID, token=stored.status_token, token_issued_at=old)
    assert await edits_elsewhere(service, await queue.get(job.id), KEY) == []


async def test_once_the_token_dies_the_outcome_goes_to_the_chat(service: BotService, job: Job) -> None:
    presenter = RecordingPresenter(service, token_key=KEY, token_lifetime_s=0.0)
    await presenter.attach_status(job, None, "Job #1 is queued.", token=TOKEN, opener=object())
    failed = dataclasses.replace(job, status=JobStatus.FAILED)
    await presenter.report_failure(build_view(failed))
    assert presenter.edits == []
    assert presenter.posted == [build_view(failed).status_line]


async def test_a_fast_jobs_late_answer_is_tidied_at_once(
    queue: JobQueue, service: BotService, job: Job
) -> None:
    presenter = RecordingPresenter(service)
    done = build_view(dataclasses.replace(job, status=JobStatus.DONE, duration_s=1.0))
    assert await presenter.deliver(done) == "900"
    await presenter.attach_status(job, 41, "Job #1 is queued.")
    assert presenter.tidied == [f"{done.status_line} It is posted in this channel."]
    assert presenter.edits == []
    assert (await queue.get(job.id)).status_message_id is None  # nothing left to edit later


async def test_ready_later_is_said_in_the_chat_and_ends_the_status_line(
    service: BotService, job: Job
) -> None:
    presenter = RecordingPresenter(service)
    await presenter.attach_status(job, 41, "Job #1 is queued.")
    await presenter.report_ready_later(job)
    assert presenter.posted == [texts.ready_later_text(job)]
    await presenter.show_progress(running(job, 1))  # `job` as read before its line was attached
    assert presenter.edits == []  # the line is forgotten here
