"""`storage.keep_images_days`: old images go, undelivered ones never, and buttons say the picture expired."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bot.errors import NothingToDo
from storage.images import ImageStore
from storage.jobs import Job
from storage.queue import JobQueue
from storage.retention import ImageRetention
from storage.settings import StorageSettings
from tests.support.app_harness import running
from tests.support.new_jobs import NewJobFactory
from tests.support.services import build_service
from tests.support.telegram_emulator import TelegramEmulator, TgChat
from tests.support.telegram_harness import ANN, make_config, until


def exists(path: str) -> bool:
    return Path(path).exists()


async def done_job(
    queue: JobQueue, images: ImageStore, make_new_job: NewJobFactory, *, delivered: bool
) -> Job:
    job = (await queue.enqueue(make_new_job())).job
    assert await queue.claim_next("test") is not None
    stored = await images.save(job.id, job.request.seed, b"\x89PNG fake")
    done = await queue.mark_done(job.id, stored, duration_s=1.0, step_seconds=0.5)
    if delivered:
        done = await queue.mark_delivered(job.id, result_message_id="m")
    return done


async def test_old_delivered_images_are_deleted_and_undelivered_ones_kept(
    queue: JobQueue, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    delivered = await done_job(queue, image_store, make_new_job, delivered=True)
    waiting = await done_job(queue, image_store, make_new_job, delivered=False)
    assert delivered.finished_at is not None and delivered.result_path and waiting.result_path
    retention = ImageRetention(queue, image_store, keep_days=30, interval_s=3600)

    assert await retention.run_once(now=delivered.finished_at + timedelta(days=29)) == 0
    assert exists(delivered.result_path)

    assert await retention.run_once(now=delivered.finished_at + timedelta(days=31)) == 1
    assert not exists(delivered.result_path)
    expired = await queue.get(delivered.id)
    assert (expired.result_path, expired.result_sha256) == (None, None)
    # Not delivered yet: kept, however old.
    assert exists(waiting.result_path)
    assert (await queue.get(waiting.id)).result_path == waiting.result_path

    service = build_service(queue, image_store)
    with pytest.raises(NothingToDo, match="expired"):
        await service.image_bytes(expired)
    with pytest.raises(NothingToDo, match="expired"):
        await service.show(expired.requester, expired.id)


def test_retention_is_off_by_default() -> None:
    assert StorageSettings().keep_images_days is None


async def test_the_schedule_deletes_a_delivered_image_and_its_button_says_expired(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    config = make_config(tmp_path, emulator)
    storage = config.storage.model_copy(update={"keep_images_days": 1e-6, "image_cleanup_interval_s": 0.1})
    config = config.model_copy(update={"storage": storage})
    chat = TgChat.private(ANN)
    async with running(config) as app:
        await emulator.send_text(ANN, chat, "/imagine a red fox --size 64x64 --steps 1")
        photo = await emulator.wait_for("sendPhoto", lambda call: call.chat_id == chat.id, within_s=30)

        async def expired() -> bool:
            job = await app.queue.get(1)
            return job.delivered_at is not None and job.result_path is None

        await until(expired, what="the delivered image deleted by the schedule")
        assert not any((tmp_path / "data" / "images").rglob("*.png"))
        before = len(emulator.calls)
        await emulator.press_button(ANN, chat, photo.response["message_id"], "png:1")
        answer = await emulator.wait_for("answerCallbackQuery", after=before)
        assert "expired" in answer.params["text"]
        assert emulator.calls_of("sendDocument", after=before) == []
        message_id = await emulator.send_text(ANN, chat, "/show 1")
        reply = await emulator.wait_for(
            "sendMessage", lambda call: "expired" in call.params.get("text", ""), after=before
        )
        assert reply.json("reply_parameters")["message_id"] == message_id
