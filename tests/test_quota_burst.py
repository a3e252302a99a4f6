"""Quotas under bursts, through the real clients: many /imagine sent together by several users accept
exactly `max_active_jobs_per_user` per user, on Telegram and on Discord (no engine: jobs stay queued).
The same rule on PostgreSQL is in test_storage_quota.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from tests.support import discord_harness
from tests.support.app_harness import SMALL_LIMITS, running
from tests.support.discord_emulator import DiscordEmulator
from tests.support.telegram_emulator import TelegramEmulator, TgChat, TgUser
from tests.support.telegram_harness import GROUP, make_config

LIMIT = 3
LIMITS = SMALL_LIMITS.model_copy(update={"max_active_jobs_per_user": LIMIT})


async def test_telegram_burst_accepts_exactly_the_quota(emulator: TelegramEmulator, tmp_path: Path) -> None:
    users = [TgUser(2000 + n, f"User{n}", f"user{n}") for n in range(5)]
    per_user = 8
    async with running(make_config(tmp_path, emulator, limits=LIMITS), with_engine=False) as app:
        # Group and private chats alike: the quota is per user, wherever they write.
        sends = [
            emulator.send_text(
                user, GROUP if n % 2 else TgChat.private(user), f"/imagine cat {n} --size 64x64"
            )
            for n in range(per_user)
            for user in users
        ]
        await asyncio.gather(*sends)
        # Refusals are single replies (answers to accepted commands in the group may share a message).
        refusals = await emulator.wait_for_count(
            "sendMessage",
            len(sends) - LIMIT * len(users),
            lambda call: f"the limit is {LIMIT}" in call.params["text"],
            within_s=60,
        )
        assert len(refusals) == len(sends) - LIMIT * len(users)
        queued = await app.queue.queued_in_fair_order()
        assert Counter(job.requester.user_id for job in queued) == {str(user.id): LIMIT for user in users}


async def test_discord_burst_accepts_exactly_the_quota(tmp_path: Path) -> None:
    users = range(7000, 7006)
    per_user = 8
    async with (
        discord_harness.emulated() as emulator,
        running(discord_harness.make_config(tmp_path, emulator, limits=LIMITS), with_engine=False) as app,
    ):
        interactions = await asyncio.gather(
            *(inject(emulator, user, f"a cat number {n}") for n in range(per_user) for user in users)
        )
        answers = [
            discord_harness.content(await emulator.wait_for_call(discord_harness.answer_to(i), within=60))
            for i in interactions
        ]
        assert sum(f"the limit is {LIMIT}" in answer for answer in answers) == len(
            interactions
        ) - LIMIT * len(users)
        queued = await app.queue.queued_in_fair_order()
        assert Counter(job.requester.user_id for job in queued) == {str(user): LIMIT for user in users}


async def inject(emulator: DiscordEmulator, user: int, prompt: str) -> discord_harness.Injected:
    return await emulator.inject_slash("imagine", {"prompt": prompt}, user_id=user)
