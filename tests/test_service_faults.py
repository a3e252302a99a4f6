"""The service when things go wrong: numbers out of range from any path, a full disk, /show's rules."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from bot import texts
from bot.command_parser import ImagineArgs
from bot.errors import InvalidRequest, NothingToDo, Unavailable
from bot.service import BotService
from bot.telegram import TELEGRAM
from engine.settings import EngineSettings
from storage.database import Database
from storage.errors import StorageFull
from storage.images import ImageStore
from storage.jobs import Requester
from storage.queue import JobQueue
from storage.signals import LocalSignals
from tests.support.services import build_service

ALICE = Requester(TELEGRAM, chat_id="100", user_id="1", user_name="alice")
STRANGER = Requester(TELEGRAM, chat_id="555", user_id="9", user_name="eve")
HUGE = 99999999999999999999


def make_service(queue: JobQueue, image_store: ImageStore) -> BotService:
    return build_service(queue, image_store, engine=EngineSettings(default_steps=4))


@pytest.mark.parametrize("job_id", [HUGE, 0, -1])
async def test_job_numbers_out_of_range_get_the_range_message_everywhere(
    queue: JobQueue, image_store: ImageStore, job_id: int
) -> None:
    service = make_service(queue, image_store)
    calls = [
        service.cancel(ALICE, job_id),
        service.job(job_id),
        service.show(ALICE, job_id),
        service.reroll(ALICE, job_id=job_id, from_button=True),
        service.job_for_owner_or_admin(ALICE, job_id, is_admin=False),
    ]
    for call in calls:
        with pytest.raises(InvalidRequest, match="out of range: job numbers are whole numbers from 1"):
            await call


async def test_show_only_what_the_asker_may_see_and_only_when_done(
    queue: JobQueue, image_store: ImageStore
) -> None:
    service = make_service(queue, image_store)
    queued = await service.imagine(ALICE, ImagineArgs("a fox", width=256, height=256))
    with pytest.raises(NothingToDo, match="posted here when it is done"):
        await service.show(ALICE, queued.job.id)
    with pytest.raises(NothingToDo, match=f"no job #{queued.job.id} here"):
        await service.show(STRANGER, queued.job.id)
    await queue.cancel(queued.job.id)
    with pytest.raises(NothingToDo, match="has been cancelled"):
        await service.show(ALICE, queued.job.id)


async def test_a_full_disk_says_so_and_never_says_try_again(db_url: str, image_store: ImageStore) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("fills an SQLite file to its page limit")
    setup = Database(db_url)
    await setup.upgrade()
    await setup.close()
    database = Database(db_url)

    def cap_size(dbapi_connection: Any, _record: Any) -> None:
        # SQLite's own "database or disk is full" (SQLITE_FULL), the way a full disk reports it.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA page_count")
            pages = cursor.fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages + 3}")
        finally:
            cursor.close()

    event.listen(database.engine.sync_engine, "connect", cap_size)
    try:
        service = make_service(JobQueue(database, LocalSignals(), max_attempts=2), image_store)
        queued = 0
        refusal: Unavailable | None = None
        while refusal is None and queued < 5000:
            try:
                await service.imagine(
                    ALICE, ImagineArgs("a long prompt " * 40, width=256, height=256), is_admin=True
                )
                queued += 1
            except Unavailable as error:
                refusal = error
        assert refusal is not None and queued > 0  # some fitted before the disk filled up
        text = str(refusal)
        assert "out of disk space" in text and "nothing was queued" in text
        assert "try again" not in text.lower()
    finally:
        await database.close()


def test_a_full_disk_is_named_even_where_nobody_expected_it() -> None:
    assert texts.unexpected_error_text(StorageFull("no space")) == texts.STORAGE_FULL
    assert "try again" not in texts.STORAGE_FULL.lower()
    assert "Try again" in texts.unexpected_error_text(RuntimeError("a bug"))
