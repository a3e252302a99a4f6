"""/imagine to photo on Telegram, end to end: the emulator, the real PTB client, the real engine worker
process with the tiny CPU backend, the delivery loop and a SQLite file, all through `bot.app.Application`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.app import Application
from storage.jobs import Job, JobStatus
from tests.support.app_harness import running
from tests.support.telegram_emulator import BOT_USERNAME, Call, TelegramEmulator, TgChat, TgUser
from tests.support.telegram_harness import (
    ANN,
    BOB,
    GROUP,
    SMALL_LIMITS,
    make_config,
    reply_to,
    until,
)

ADMIN = TgUser(1003, "Ada", "ada")


@pytest.fixture(autouse=True)
def quick_slow_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    # "[slow]" prompts sleep this long per step in the worker (a child process reads it at spawn).
    monkeypatch.setenv("TINY_BACKEND_STEP_S", "0.3")


def photo_for(job_id: int) -> Callable[[Call], bool]:
    return lambda call: f"job #{job_id}" in call.params.get("caption", "")


async def stored_png(app: Application, job: Job) -> bytes:
    assert job.result_path is not None
    return await app.images.read(job.result_path)


async def test_imagine_gives_photo_with_caption_and_buttons(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator)) as app:
        message_id = await emulator.send_text(
            ANN, chat, "/imagine a red fox in snow --size 64x80 --steps 2 --seed 7"
        )
        status = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
        photo = await emulator.wait_for("sendPhoto", lambda call: call.chat_id == chat.id, within_s=30)

        job = await app.queue.get(1)
        assert job.status is JobStatus.DONE
        assert photo.files["photo"] == await stored_png(app, job)
        assert photo.response["photo"][0]["width"] == 64 and photo.response["photo"][0]["height"] == 80
        caption = photo.params["caption"]
        assert caption.startswith("a red fox in snow\n")
        for part in ("seed 7", "2 steps", "64x80", "job #1"):
            assert part in caption
        assert "parse_mode" not in photo.params
        assert photo.button_data() == ["vary:1", "varystrong:1", "upscale:1", "reroll:1", "png:1", "delete:1"]
        # The status message gave way to the photo.
        await emulator.wait_for(
            "deleteMessage", lambda call: call.integer("message_id") == status.response["message_id"]
        )
        await until(lambda: _delivered(app, 1), what="job 1 recorded as delivered")

        # Original PNG: the lossless file as a document.
        photo_id = photo.response["message_id"]
        before = len(emulator.calls)
        await emulator.press_button(ANN, chat, photo_id, "png:1")
        await emulator.wait_for("answerCallbackQuery", after=before)
        document = await emulator.wait_for("sendDocument", after=before)
        assert document.files["document"] == await stored_png(app, job)
        assert document.file_names["document"] == "majicbot-1-7.png"

        # /reroll 1234: the same prompt with seed 1234.
        await emulator.send_text(ANN, chat, "/reroll 1234")
        rerolled = await emulator.wait_for("sendPhoto", photo_for(2), within_s=30)
        assert "seed 1234" in rerolled.params["caption"]
        assert rerolled.params["caption"].startswith("a red fox in snow\n")

        # Delete, by the owner.
        before = len(emulator.calls)
        await emulator.press_button(ANN, chat, photo_id, "delete:1")
        await emulator.wait_for(
            "deleteMessage", lambda call: call.integer("message_id") == photo_id, after=before
        )


async def test_plain_text_in_private_chat_draws(emulator: TelegramEmulator, tmp_path: Path) -> None:
    chat = TgChat.private(BOB)
    async with running(make_config(tmp_path, emulator)):
        await emulator.send_text(BOB, chat, "a paper boat on a puddle --size 64x64 --steps 1")
        photo = await emulator.wait_for("sendPhoto", lambda call: call.chat_id == chat.id, within_s=30)
        assert photo.params["caption"].startswith("a paper boat on a puddle\n")


@pytest.mark.parametrize(
    ("chat", "interval_s"),
    [(TgChat.private(ANN), 1.0), (GROUP, 3.0)],
    ids=["private", "group"],
)
async def test_progress_is_edited_throttled_with_chat_actions(
    emulator: TelegramEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chat: TgChat,
    interval_s: float,
) -> None:
    monkeypatch.setenv("TINY_BACKEND_STEP_S", "0.75")  # 8 steps: 6 s, more than one chat action
    async with running(make_config(tmp_path, emulator)):
        message_id = await emulator.send_text(ANN, chat, "/imagine [slow] clouds --size 64x64 --steps 8")
        status = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
        await emulator.wait_for("sendPhoto", lambda call: call.chat_id == chat.id, within_s=30)
        status_id = status.response["message_id"]
        edits = [
            call
            for call in emulator.calls_of("editMessageText")
            if call.integer("message_id") == status_id and call.chat_id == chat.id
        ]
        assert any("step" in call.params["text"] and "of 8" in call.params["text"] for call in edits)
        texts = [call.params["text"] for call in edits]
        assert len(texts) == len(set(texts)), "unchanged text is never sent again"
        # Measured on arrival at the emulator, so allow a little jitter below the interval.
        gaps = [later.at - earlier.at for earlier, later in itertools.pairwise([status, *edits])]
        assert all(gap >= interval_s - 0.2 for gap in gaps), gaps
        # One with the reply, then one about every 4 s while the job runs.
        actions = [call for call in emulator.calls_of("sendChatAction") if call.chat_id == chat.id]
        assert len(actions) >= 3
        assert {call.params["action"] for call in actions} == {"upload_photo"}


async def test_failed_job_says_why_and_offers_retry(emulator: TelegramEmulator, tmp_path: Path) -> None:
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator)) as app:
        message_id = await emulator.send_text(ANN, chat, "/imagine [boom] a vase --size 64x64 --seed 99")
        status = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
        failure = await emulator.wait_for(
            "editMessageText", lambda call: "failed" in call.params["text"], within_s=30
        )
        assert failure.integer("message_id") == status.response["message_id"]
        assert failure.params["text"].startswith("Job #1 failed: ")
        assert "\n" not in failure.params["text"]
        assert failure.button_data() == ["retry:1"]

        before = len(emulator.calls)
        await emulator.press_button(ANN, chat, status.response["message_id"], "retry:1")
        answer = await emulator.wait_for("answerCallbackQuery", after=before)
        assert answer.params["text"] == "Queued as job #2."
        retried = await app.queue.get(2)
        assert retried.request.seed == 99
        assert retried.parent_id == 1


async def test_reroll_button_works_after_restart(emulator: TelegramEmulator, tmp_path: Path) -> None:
    chat = TgChat.private(ANN)
    config = make_config(tmp_path, emulator)
    async with running(config) as app:
        await emulator.send_text(ANN, chat, "/imagine a windmill --size 64x64 --steps 1")
        photo = await emulator.wait_for("sendPhoto", photo_for(1), within_s=30)
        await until(lambda: _delivered(app, 1), what="job 1 recorded as delivered")
        first_png = await stored_png(app, await app.queue.get(1))

    async with running(config) as app:
        before = len(emulator.calls)
        await emulator.press_button(ANN, chat, photo.response["message_id"], "reroll:1")
        answer = await emulator.wait_for("answerCallbackQuery", after=before)
        assert answer.params["text"] == "Queued as job #2."
        again = await emulator.wait_for("sendPhoto", photo_for(2), after=before, within_s=30)
        assert again.params["caption"].startswith("a windmill\n")
        assert again.button_data() == ["vary:2", "varystrong:2", "upscale:2", "reroll:2", "png:2", "delete:2"]
        assert (await app.queue.get(2)).parent_id == 1

        await emulator.press_button(ANN, chat, photo.response["message_id"], "png:1")
        document = await emulator.wait_for("sendDocument", after=before)
        assert document.files["document"] == first_png


async def test_queued_job_survives_restart_and_its_status_message_is_tidied(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    chat = TgChat.private(BOB)
    config = make_config(tmp_path, emulator)
    async with running(config, with_engine=False):  # a chat-only host: the job waits
        message_id = await emulator.send_text(BOB, chat, "/imagine a night train --size 64x64 --steps 1")
        status = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))

    async with running(config):
        await emulator.wait_for("sendPhoto", photo_for(1), within_s=30)
        # The status message is known from the job's row, not from the first process's memory.
        await emulator.wait_for(
            "deleteMessage", lambda call: call.integer("message_id") == status.response["message_id"]
        )


async def test_progress_edits_go_on_after_a_restart_of_the_chat_process(
    emulator: TelegramEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINY_BACKEND_STEP_S", "0.6")
    chat = TgChat.private(BOB)
    config = make_config(tmp_path, emulator)
    async with running(config, with_engine=False):
        message_id = await emulator.send_text(BOB, chat, "/imagine [slow] a mill --size 64x64 --steps 5")
        status = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
    status_id = status.response["message_id"]

    async with running(config):  # a new process: the status message is known from the job's row
        await emulator.wait_for(
            "editMessageText",
            lambda call: call.integer("message_id") == status_id and "step" in call.params["text"],
            within_s=30,
        )
        await emulator.wait_for("sendPhoto", photo_for(1), within_s=30)


async def test_retry_after_is_waited_out_and_nothing_is_lost(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    chat = TgChat.private(ANN)
    emulator.fail_next("sendPhoto", 1, retry_after=1)
    async with running(make_config(tmp_path, emulator)):
        await emulator.send_text(ANN, chat, "/imagine a lantern --size 64x64 --steps 1")
        photo = await emulator.wait_for("sendPhoto", photo_for(1), within_s=30)
        refused = [call for call in emulator.calls if call.method == "sendPhoto" and call.status == 429]
        assert len(refused) == 1
        assert photo.at - refused[0].at >= 0.9  # retry_after was honoured
        assert len(emulator.calls_of("sendPhoto")) == 1


async def test_delete_only_by_owner_or_admin_in_groups(emulator: TelegramEmulator, tmp_path: Path) -> None:
    config = make_config(tmp_path, emulator, admin_user_ids=(ADMIN.id,))
    async with running(config):
        await emulator.send_text(ANN, GROUP, f"/imagine@{BOT_USERNAME} a tower --size 64x64 --steps 1")
        photo = await emulator.wait_for("sendPhoto", photo_for(1), within_s=30)
        photo_id = photo.response["message_id"]

        before = len(emulator.calls)
        await emulator.press_button(BOB, GROUP, photo_id, "delete:1")
        refused = await emulator.wait_for("answerCallbackQuery", after=before)
        assert "Only the person who made job #1" in refused.params["text"]
        assert refused.params.get("show_alert") == "true"

        await emulator.press_button(ADMIN, GROUP, photo_id, "delete:1")
        await emulator.wait_for(
            "deleteMessage", lambda call: call.integer("message_id") == photo_id, after=before
        )


async def test_burst_from_five_users_is_served_fairly(
    emulator: TelegramEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINY_BACKEND_STEP_S", "1.0")
    users = [TgUser(2000 + number, f"User {number}") for number in range(5)]
    blocker = TgUser(2999, "Blocker")
    blocker_chat = TgChat.private(blocker)
    async with running(make_config(tmp_path, emulator)) as app:
        # A slow job holds the worker while the burst is queued, so the order below is the queue's
        # alone; it is cancelled once the burst is in.
        await emulator.send_text(blocker, blocker_chat, "/imagine [slow] wait --size 64x64 --steps 8")
        await until(lambda: _running_count(app, 1), what="the slow job runs")
        for user in users:  # user by user: first come, first served would serve them one after another
            for number in range(6):
                text = f"/imagine {user.first_name} {number} --size 64x64 --steps 1"
                await emulator.send_text(user, TgChat.private(user), text)

        async def burst_queued() -> bool:
            return len(await app.queue.queued_in_fair_order()) == 30

        await until(burst_queued, what="the burst is queued")
        assert [job.id for job in await app.queue.running()] == [1], "the slow job still runs"
        assert "Cancelled job #1" in await _say(emulator, blocker, blocker_chat, "/cancel")

        photos = await emulator.wait_for_count("sendPhoto", 30, within_s=90)
        assert Counter(call.chat_id for call in photos) == Counter({user.id: 6 for user in users})
        jobs = [await app.queue.get(job_id) for job_id in range(2, 32)]
        assert all(job.status is JobStatus.DONE for job in jobs)
        started = sorted(jobs, key=lambda job: (job.started_at, job.id))
        for round_number in range(6):
            batch = started[round_number * 5 : round_number * 5 + 5]
            assert {job.requester.user_id for job in batch} == {str(user.id) for user in users}, (
                f"round {round_number} is not one job per user"
            )


async def _say(emulator: TelegramEmulator, user: TgUser, chat: TgChat, text: str) -> str:
    message_id = await emulator.send_text(user, chat, text)
    return (await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))).params["text"]


async def _delivered(app: Application, job_id: int) -> bool:
    return (await app.queue.get(job_id)).delivered_at is not None


async def _running_count(app: Application, count: int) -> bool:
    return len(await app.queue.running()) == count


async def test_long_prompt_is_shortened_to_fit_the_caption(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    limits = SMALL_LIMITS.model_copy(update={"max_prompt_length": 4000})
    prompt = " ".join(f"word{number}" for number in range(500))  # about 3900 characters
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator, limits=limits)) as app:
        await emulator.send_text(ANN, chat, f"/imagine {prompt} --size 64x64 --steps 1 --seed 5")
        photo = await emulator.wait_for("sendPhoto", photo_for(1), within_s=30)
        caption = photo.params["caption"]
        assert len(caption) <= 1024
        assert caption.endswith("job #1")
        assert "seed 5" in caption
        assert caption.startswith("word0 word1 ")
        assert (await app.queue.get(1)).request.prompt == prompt  # stored whole
