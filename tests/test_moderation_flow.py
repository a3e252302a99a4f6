"""Moderation through the real Telegram client and the app's wiring (config -> service): a banned word,
a ban and the hourly limit each get their refusal as a reply, and nothing is queued (no engine)."""

from __future__ import annotations

from pathlib import Path

from bot.settings import ModerationSettings
from storage.jobs import Platform, Requester
from tests.support.app_harness import running
from tests.support.telegram_emulator import TelegramEmulator, TgChat
from tests.support.telegram_harness import ANN, BOB, make_config, reply_to


async def test_refusals_reach_the_user_and_queue_nothing(emulator: TelegramEmulator, tmp_path: Path) -> None:
    config = make_config(tmp_path, emulator, admin_user_ids=(ANN.id,))
    config = config.model_copy(
        update={
            "moderation": ModerationSettings(banned_words=("forbidden",)),
            "limits": config.limits.model_copy(update={"jobs_per_hour": 1}),
        }
    )
    bob_chat = TgChat.private(BOB)
    async with running(config, with_engine=False) as app:
        sent = await emulator.send_text(BOB, bob_chat, "/imagine a Forbidden city --size 64x64")
        answer = await emulator.wait_for("sendMessage", reply_to(bob_chat.id, sent), within_s=15)
        assert answer.params["text"].startswith("Your prompt has a word or phrase that is not allowed")
        assert await app.queue.active_jobs(Platform.TELEGRAM, str(BOB.id)) == []

        sent = await emulator.send_text(BOB, bob_chat, "/imagine a quiet city --size 64x64")
        await emulator.wait_for("sendMessage", reply_to(bob_chat.id, sent), within_s=15)
        sent = await emulator.send_text(BOB, bob_chat, "/imagine another city --size 64x64")
        answer = await emulator.wait_for("sendMessage", reply_to(bob_chat.id, sent), within_s=15)
        assert answer.params["text"].startswith("You have sent 1 job in the last hour")
        assert len(await app.queue.active_jobs(Platform.TELEGRAM, str(BOB.id))) == 1

        operator = Requester(Platform.TELEGRAM, str(ANN.id), str(ANN.id), "ann")
        await app.service.ban(operator, str(BOB.id), reason="spam")
        sent = await emulator.send_text(BOB, bob_chat, "/reroll")
        answer = await emulator.wait_for("sendMessage", reply_to(bob_chat.id, sent), within_s=15)
        assert answer.params["text"].startswith("You are banned from using this bot (reason: spam)")
