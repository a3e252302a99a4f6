"""A busy Telegram group under its real flood limit (20 messages a minute, enforced by the emulator with
429s): 25 commands from 5 users at once. Answers come first (batched into few messages), images next,
progress edits only with budget to spare; every answer within 10 s, every image exactly once. The real
PTB client, the real engine worker (tiny backend) and the whole application."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.app_harness import running
from tests.support.telegram_emulator import TelegramEmulator, TgChat, TgUser
from tests.support.telegram_harness import GROUP, make_config, until

USERS = [TgUser(3000 + n, f"Member{n}", f"member{n}") for n in range(5)]
COMMANDS = 25
ACK_WITHIN_S = 10.0
JOB = re.compile(r"[Jj]ob #(\d+)")

pytestmark = pytest.mark.timeout(240)


async def test_a_burst_in_a_group_is_answered_at_once_and_each_image_posted_once(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    emulator.limit_groups(20, 60.0)
    async with running(make_config(tmp_path, emulator)) as app:
        started = time.monotonic()
        for n in range(COMMANDS):
            await emulator.send_text(USERS[n % len(USERS)], GROUP, f"/imagine picture {n} --size 64x64")
        # Someone in a private chat meanwhile: not held up by the group's flood limit.
        loner = TgUser(4000, "Loner", "loner")
        await emulator.send_text(loner, TgChat.private(loner), "/imagine a quiet lake --size 64x64")
        private_photo = await emulator.wait_for(
            "sendPhoto", lambda call: call.chat_id == loner.id, within_s=ACK_WITHIN_S + 20
        )

        def answered() -> set[int]:
            calls = emulator.calls_of("sendMessage")
            return {
                int(job)
                for call in calls
                if call.chat_id == GROUP.id
                for job in JOB.findall(call.params["text"])
            }

        await emulator.wait_for_count(
            "sendMessage", 1, lambda call: len(answered()) >= COMMANDS, within_s=ACK_WITHIN_S + 5
        )
        answers = [call for call in emulator.calls_of("sendMessage") if call.chat_id == GROUP.id]
        jobs = [await app.queue.get(n) for n in range(1, COMMANDS + 2)]
        group_jobs = {job.id for job in jobs if job.requester.chat_id == str(GROUP.id)}
        assert len(group_jobs) == COMMANDS
        assert answered() == group_jobs
        last_answer_s = max(call.at for call in answers) - started
        assert last_answer_s <= ACK_WITHIN_S, f"the last answer came after {last_answer_s:.1f} s"

        photos = await emulator.wait_for_count(
            "sendPhoto", COMMANDS, lambda call: call.chat_id == GROUP.id, within_s=180
        )
        last_image_s = max(call.at for call in photos) - started
        assert private_photo.at < max(call.at for call in photos)
        posted = Counter(int(JOB.findall(call.params["caption"])[-1]) for call in photos)
        assert posted == dict.fromkeys(group_jobs, 1)

        async def all_delivered() -> bool:
            jobs = [await app.queue.get(n) for n in range(1, COMMANDS + 2)]
            return all(job.delivered_at is not None for job in jobs)

        await until(all_delivered, what="every job recorded as delivered")
    flooded = sum(call.status == 429 for call in emulator.calls)
    print(
        f"\n25 commands in a group (20 messages/min): {len(answers)} answer messages, the last after "
        f"{last_answer_s:.1f} s; last image after {last_image_s:.1f} s; {flooded} calls met flood control"
    )
    # No duplicate image even after the wait, and none sent while the limiter thought the group full.
    assert len([c for c in emulator.calls_of("sendPhoto") if c.chat_id == GROUP.id]) == COMMANDS
