"""The Telegram Bot API failing while the bot runs (the emulator answering 502), through the whole
application: finished pictures wait and are posted once it is back; a queued job whose answer could not
be sent is never followed by "try again"."""

from __future__ import annotations

from pathlib import Path

from bot.settings import DeliverySettings
from tests.support.app_harness import running
from tests.support.telegram_emulator import TelegramEmulator, TgChat
from tests.support.telegram_harness import ANN, make_config, reply_to, until

# The clock compressed about 100 times: retries every 0.02-0.6 s instead of 2-60 s, so a few seconds here
# are several minutes of outage as the delivery loop sees them (and far from retry_for_s).
COMPRESSED = DeliverySettings(retry_for_s=900.0, retry_backoff_s=(0.02, 0.6))


async def test_an_outage_of_the_chat_api_loses_nothing_and_posts_once(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    config = make_config(tmp_path, emulator).model_copy(update={"delivery": COMPRESSED})
    chat = TgChat.private(ANN)
    async with running(config) as app:
        message_id = await emulator.send_text(ANN, chat, "/imagine a lighthouse --size 64x64 --steps 2")
        await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
        emulator.set_outage(True)

        async def done() -> bool:
            return (await app.queue.get(1)).finished_at is not None

        await until(done, what="job 1 finished during the outage")
        # Many posts tried and refused, none recorded as delivered.
        await until(lambda: _failed_photo_posts(emulator, 8), what="eight refused uploads during the outage")
        assert (await app.queue.get(1)).delivered_at is None
        emulator.set_outage(False)
        photo = await emulator.wait_for("sendPhoto", lambda call: call.chat_id == chat.id, within_s=30)

        async def delivered() -> bool:
            return (await app.queue.get(1)).delivered_at is not None

        await until(delivered, what="job 1 recorded as delivered")
        assert "job #1" in photo.params["caption"]
    assert len(emulator.calls_of("sendPhoto")) == 1  # posted once
    assert not [call for call in emulator.calls_of("sendMessage") if "/show" in call.params["text"]]


async def _failed_photo_posts(emulator: TelegramEmulator, count: int) -> bool:
    return (
        len([call for call in emulator.calls if call.method == "sendPhoto" and call.status == 502]) >= count
    )


async def test_a_queued_job_whose_answer_failed_is_not_followed_by_try_again(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator), with_engine=False) as app:
        emulator.break_next("sendMessage", 3)  # the answer fails every time it is tried
        await emulator.send_text(ANN, chat, "/imagine a red fox --size 64x64")

        async def refused_three_times() -> bool:
            return len([c for c in emulator.calls if c.method == "sendMessage" and c.status == 502]) >= 3

        await until(refused_three_times, what="the answer tried three times")
        # The next command's answer comes after anything the first one could still have said.
        message_id = await emulator.send_text(ANN, chat, "/queue")
        await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
        said = [call.params["text"] for call in emulator.calls_of("sendMessage")]
        assert len(said) == 1 and "Waiting: 1 job" in said[0]
        assert len(await app.queue.queued_in_fair_order()) == 1
