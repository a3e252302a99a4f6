"""User settings, bans and the hourly limit in storage, on SQLite and PostgreSQL: settings change
atomically, a ban stops enqueueing in the enqueue transaction, and a burst from many connections
accepts exactly `max_per_hour` jobs per user."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.discord import DISCORD
from bot.telegram import TELEGRAM
from storage.bans import BanList, UserBanned
from storage.database import Database
from storage.queue import ActiveLimitReached, HourlyLimitReached, JobQueue
from storage.tables import JobRow
from storage.user_settings import StoredSettings, UserSettingsStore
from tests.support.new_jobs import NewJobFactory

pytestmark = pytest.mark.all_databases

TG = TELEGRAM


async def test_settings_are_stored_per_platform_and_user_and_reset(database: Database) -> None:
    store = UserSettingsStore(database)
    assert await store.get(TG, "1") == StoredSettings()
    chosen = StoredSettings("16:9", 28, 2, "text", "watercolor", False)
    assert await store.update(TG, "1", lambda _: chosen) == chosen
    assert await store.get(TG, "1") == chosen
    assert await store.get(DISCORD, "1") == StoredSettings()
    assert await store.get(TG, "2") == StoredSettings()
    assert await store.reset(TG, "1")
    assert await store.get(TG, "1") == StoredSettings()
    assert not await store.reset(TG, "1")


async def test_a_change_that_raises_stores_nothing(database: Database) -> None:
    store = UserSettingsStore(database)
    await store.update(TG, "1", lambda current: dataclasses.replace(current, steps=9))

    def refuse(_: StoredSettings) -> StoredSettings:
        raise ValueError("out of range")

    with pytest.raises(ValueError, match="out of range"):
        await store.update(TG, "1", refuse)
    assert (await store.get(TG, "1")).steps == 9


async def test_concurrent_changes_of_one_user_keep_each_other(db_url: str) -> None:
    # Two connections (as two chat processes would have), changing different settings at once.
    databases = [Database(db_url, busy_timeout_ms=30_000) for _ in range(2)]
    await databases[0].upgrade()
    stores = [UserSettingsStore(db) for db in databases]
    try:
        changes = [
            stores[0].update(TG, "1", lambda s: dataclasses.replace(s, steps=12)),
            stores[1].update(TG, "1", lambda s: dataclasses.replace(s, style_suffix="ink")),
            stores[0].update(TG, "1", lambda s: dataclasses.replace(s, aspect_ratio="3:2")),
            stores[1].update(TG, "1", lambda s: dataclasses.replace(s, show_progress=False)),
        ]
        await asyncio.gather(*changes)
        assert await stores[0].get(TG, "1") == StoredSettings("3:2", 12, None, "", "ink", False)
    finally:
        for db in databases:
            await db.close()


async def test_bans_are_kept_listed_and_lifted(database: Database) -> None:
    bans = BanList(database)
    assert await bans.get(TG, "5") is None
    first = await bans.ban(TG, "5", banned_by="1", reason="spam")
    assert (first.platform, first.user_id, first.banned_by, first.reason) == (TG, "5", "1", "spam")
    again = await bans.ban(TG, "5", banned_by="2", reason="still spam")
    assert (again.banned_by, again.reason) == ("2", "still spam") and again.banned_at >= first.banned_at
    await bans.ban(TG, "6", banned_by="1")
    await bans.ban(DISCORD, "5", banned_by="9")
    assert [ban.user_id for ban in await bans.all(TG)] == ["6", "5"]
    assert await bans.get(TG, "5") == again
    lifted = await bans.unban(TG, "5")
    assert lifted == again
    assert await bans.unban(TG, "5") is None
    assert await bans.get(TG, "5") is None
    assert await bans.get(DISCORD, "5") is not None


async def test_a_banned_user_cannot_enqueue(
    database: Database, queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    bans = BanList(database)
    await bans.ban(TG, "5", banned_by="1", reason="spam")
    with pytest.raises(UserBanned) as raised:
        await queue.enqueue(make_new_job(user_id="5"))
    assert raised.value.ban.reason == "spam"
    assert await queue.active_jobs(TG, "5") == []
    await bans.unban(TG, "5")
    assert (await queue.enqueue(make_new_job(user_id="5"))).created


async def test_spoiler_and_show_progress_are_kept_on_the_job(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    plain = (await queue.enqueue(make_new_job())).job
    assert (plain.spoiler, plain.show_progress) == (False, True)
    marked = dataclasses.replace(make_new_job(), spoiler=True, show_progress=False)
    job = (await queue.enqueue(marked)).job
    assert (await queue.get(job.id)).spoiler and not (await queue.get(job.id)).show_progress


async def test_the_hourly_limit_counts_every_job_of_the_last_hour(
    database: Database, queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    limited = dataclasses.replace(make_new_job(), max_per_hour=2)
    first = (await queue.enqueue(limited)).job
    second = (await queue.enqueue(limited)).job
    await queue.cancel(first.id)  # cancelled jobs count too
    with pytest.raises(HourlyLimitReached) as raised:
        await queue.enqueue(limited)
    assert raised.value.limit == 2
    assert raised.value.retry_at == first.created_at + timedelta(hours=1)
    # Other users are not affected.
    assert (await queue.enqueue(dataclasses.replace(make_new_job(user_id="2"), max_per_hour=2))).created

    # Once the first job is more than an hour old, one more is accepted, and the next refusal names
    # the second job's hour.
    async with database.write() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == first.id)
            .values(created_at=first.created_at - timedelta(hours=1))
        )
    third = (await queue.enqueue(limited)).job
    with pytest.raises(HourlyLimitReached) as raised:
        await queue.enqueue(limited)
    assert raised.value.retry_at == second.created_at + timedelta(hours=1)
    assert third.id > second.id


async def test_a_duplicate_press_returns_its_job_even_at_the_hourly_limit(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    pressed = dataclasses.replace(make_new_job(dedupe_key="reroll:1:1"), max_per_hour=1)
    first = await queue.enqueue(pressed)
    second = await queue.enqueue(pressed)
    assert first.created and not second.created and second.job.id == first.job.id


async def test_the_quota_is_checked_before_the_hour(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    both = dataclasses.replace(make_new_job(), max_active=1, max_per_hour=1)
    await queue.enqueue(both)
    # Both are full: the quota's refusal (wait for a job to finish) comes first.
    with pytest.raises(ActiveLimitReached):
        await queue.enqueue(both)
