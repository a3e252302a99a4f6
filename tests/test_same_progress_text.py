"""Discord and Telegram show the same words for the same job: its position while queued, its steps while
running. The view is built once (bot/job_view.py) and both presenters only render it.

The same story runs on each emulator, through `bot.app.Application` with the real clients: someone else's
job is queued first, then ours; the test moves the queue by hand (no engine, so no timings and no ETA)
and collects every text our status line showed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bot.app import Application
from bot.telegram import TELEGRAM
from tests.support.app_harness import running
from tests.support.discord_emulator import DiscordEmulator, Injected
from tests.support.discord_harness import answer_to, content, emulated
from tests.support.discord_harness import make_config as discord_config
from tests.support.telegram_emulator import TelegramEmulator, TgChat
from tests.support.telegram_harness import ANN, BOB, reply_to, until
from tests.support.telegram_harness import make_config as telegram_config

OURS = 2  # the job whose status line is compared
EXPECTED = [
    "Job #2 is queued at position 2, 1 job ahead.",  # the answer to the command
    "Job #2 is queued at position 1.",  # the job ahead started
    "Job #2 is starting.",  # ours was claimed
    "Job #2: step 1 of 4.",
    "Job #2: step 3 of 4.",
]

Shown = Callable[[], list[str]]


async def move_the_queue(app: Application, shown: Shown) -> None:
    """The job ahead starts, then ours runs two steps; each change is waited for on the status line."""

    async def until_shown(text: str) -> None:
        async def seen() -> bool:
            return text in shown()

        await until(seen, what=f"{text!r} shown (so far: {shown()})")

    await until_shown(EXPECTED[0])
    assert await app.queue.claim_next("test") is not None  # the job ahead
    await until_shown(EXPECTED[1])
    assert (claimed := await app.queue.claim_next("test")) is not None and claimed.id == OURS
    await until_shown(EXPECTED[2])
    await app.queue.record_progress(OURS, 1, 4)
    await until_shown(EXPECTED[3])
    await app.queue.record_progress(OURS, 3, 4)
    await until_shown(EXPECTED[4])


async def telegram_texts(tmp_path: Path) -> list[str]:
    emulator = await TelegramEmulator.start("123456789:TEST-secret-token-do-not-log")
    try:
        async with running(telegram_config(tmp_path, emulator), with_engine=False) as app:
            bobs = TgChat.private(BOB)
            kite = await emulator.send_text(BOB, bobs, "/imagine a kite --size 64x64")
            await emulator.wait_for("sendMessage", reply_to(bobs.id, kite))  # job 1 is queued first
            chat = TgChat.private(ANN)
            asked = await emulator.send_text(ANN, chat, "/imagine a lighthouse --size 64x64")
            status = await emulator.wait_for("sendMessage", reply_to(chat.id, asked))
            status_id = status.response["message_id"]

            def shown() -> list[str]:
                edits = [
                    call.params["text"]
                    for call in emulator.calls_of("editMessageText")
                    if call.chat_id == chat.id and call.integer("message_id") == status_id
                ]
                return [status.params["text"], *edits]

            await move_the_queue(app, shown)
            assert all(job.requester.platform == TELEGRAM for job in await app.queue.running())
            return shown()
    finally:
        await emulator.close()


async def discord_texts(tmp_path: Path) -> list[str]:
    async with (
        emulated() as emulator,
        running(discord_config(tmp_path, emulator, progress_edit_interval_s=1.0), with_engine=False) as app,
    ):
        await ask(emulator, "a kite --ar 1:1", user_id=7)
        ours = await ask(emulator, "a lighthouse --ar 1:1", user_id=8)

        def shown() -> list[str]:
            return [content(call) for call in emulator.calls_matching(answer_to(ours))]

        await move_the_queue(app, shown)
        return shown()


async def ask(emulator: DiscordEmulator, prompt: str, *, user_id: int) -> Injected:
    interaction = await emulator.inject_slash("imagine", {"prompt": prompt}, user_id=user_id)
    await emulator.wait_for_call(answer_to(interaction), within=10)
    return interaction


async def test_both_platforms_show_the_same_position_and_progress_text(tmp_path: Path) -> None:
    for platform in ("telegram", "discord"):
        (tmp_path / platform).mkdir()
    on_telegram = await telegram_texts(tmp_path / "telegram")
    on_discord = await discord_texts(tmp_path / "discord")
    assert on_telegram == EXPECTED
    assert on_discord == on_telegram
