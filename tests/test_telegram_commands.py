"""The Telegram adapter's commands, access rules and start-up, over loopback against the Bot API emulator.

These run the application without the engine (jobs stay queued, as on a chat-only host), so every
reply here comes from the command path alone. The image flow with the real worker is in
test_telegram_flow.py.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot import texts
from bot.command_parser import FLAGS
from bot.delivery_record import album_of, result_message_id
from bot.frontend import FrontendStartError
from bot.settings import LimitsSettings
from bot.telegram.frontend import TelegramFrontend
from storage.images import ImageStore
from storage.jobs import JobStatus
from storage.queue import JobQueue
from tests.support.app_harness import running
from tests.support.services import build_service
from tests.support.telegram_emulator import BOT_USERNAME, TelegramEmulator, TgChat, TgUser
from tests.support.telegram_harness import (
    ANN,
    BOB,
    GROUP,
    SMALL_LIMITS,
    TOKEN,
    make_config,
    reply_to,
)

STRANGER = TgUser(9999, "Eve", "eve")


async def say(emulator: TelegramEmulator, user: TgUser, chat: TgChat, text: str) -> str:
    """Send `text` and return the text of the bot's reply to it."""
    message_id = await emulator.send_text(user, chat, text)
    call = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
    return call.params["text"]


async def test_startup_registers_commands_and_polls(emulator: TelegramEmulator, tmp_path: Path) -> None:
    async with running(make_config(tmp_path, emulator), with_engine=False):
        commands = (await emulator.wait_for("setMyCommands")).json("commands")
        assert {command["command"] for command in commands} >= {"imagine", "reroll", "history", "queue"}
        assert len(emulator.calls_of("getMe")) == 1


async def test_imagine_replies_at_once_with_position(emulator: TelegramEmulator, tmp_path: Path) -> None:
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator), with_engine=False) as app:
        message_id = await emulator.send_text(ANN, chat, "/imagine a red fox --size 64x64 --seed 7")
        reply = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
        assert "Job #1" in reply.params["text"]
        assert "position 1" in reply.params["text"]
        assert "parse_mode" not in reply.params
        await emulator.wait_for("sendChatAction", lambda call: call.chat_id == chat.id)
        job = await app.queue.get(1)
        assert job.request.prompt == "a red fox"
        assert job.request.seed == 7
        assert (job.request.width, job.request.height) == (64, 64)
        assert job.requester.user_id == str(ANN.id)
        assert job.status_message_id == str(reply.response["message_id"])


async def test_plain_text_in_private_chat_is_a_prompt(emulator: TelegramEmulator, tmp_path: Path) -> None:
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator), with_engine=False) as app:
        assert "Job #1" in await say(emulator, ANN, chat, "a quiet harbour at night --size 64x64")
        assert (await app.queue.get(1)).request.prompt == "a quiet harbour at night"


async def test_groups_take_commands_only_and_ignore_other_bots(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    async with running(make_config(tmp_path, emulator), with_engine=False) as app:
        ignored = await emulator.send_text(ANN, GROUP, "/imagine@other_bot a cat --size 64x64")
        chatter = await emulator.send_text(ANN, GROUP, "just talking --size 64x64")
        reply = await say(emulator, ANN, GROUP, f"/imagine@{BOT_USERNAME} a dog --size 64x64")
        assert "Job #1" in reply
        # The help reply comes after both earlier updates were handled (or dropped).
        await say(emulator, ANN, GROUP, f"/help@{BOT_USERNAME}")
        replied_to = {
            call.json("reply_parameters")["message_id"]
            for call in emulator.calls_of("sendMessage")
            if "reply_parameters" in call.params
        }
        assert ignored not in replied_to
        assert chatter not in replied_to
        assert [job.request.prompt for job in await app.queue.queued_in_fair_order()] == ["a dog"]


async def test_unlisted_user_is_refused_politely(emulator: TelegramEmulator, tmp_path: Path) -> None:
    config = make_config(tmp_path, emulator, allowed_user_ids=(ANN.id,))
    async with running(config, with_engine=False) as app:
        refusal = await say(emulator, STRANGER, TgChat.private(STRANGER), "/imagine a cat --size 64x64")
        assert refusal == texts.not_allowed_text()
        assert "Job #1" in await say(emulator, ANN, TgChat.private(ANN), "/imagine a cat --size 64x64")
        assert [job.requester.user_id for job in await app.queue.queued_in_fair_order()] == [str(ANN.id)]


async def test_unlisted_chat_is_refused(emulator: TelegramEmulator, tmp_path: Path) -> None:
    config = make_config(tmp_path, emulator, allowed_chat_ids=(GROUP.id,))
    async with running(config, with_engine=False):
        refusal = await say(emulator, ANN, TgChat.group(-42), f"/imagine@{BOT_USERNAME} a cat --size 64x64")
        assert refusal == texts.not_allowed_text()
        assert "Job #1" in await say(emulator, ANN, GROUP, "/imagine a cat --size 64x64")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/imagine a cat --foo 3", "--foo"),
        ("/imagine a cat --seed banana", "--seed must be a whole number"),
        ("/imagine a cat --seed 4294967296", "out of range"),
        ("/imagine a cat --steps 99 --size 64x64", "--steps 99 is out of range"),
        ("/imagine a cat --size 4096x4096", "out of range"),
        ("/imagine a cat --size 100x100", "multiples of 16"),
        ("/imagine", "Your prompt is empty"),
        ("/imagine " + "long " * 60, "the limit is 200"),
        ("/reroll banana", "/reroll <seed>"),
        ("/reroll 4294967296", "out of range"),
        ("/reroll", "Nothing to reroll"),
        ("/cancel", "no queued or running job"),
        ("/cancel soon", "/cancel <job id>"),
        ("/cancel 99999999999999999999", "out of range"),
        ("/cancel -3", "out of range"),
        ("/show 99999999999999999999", "out of range"),
        ("/show", "/show <job id>"),
        ("/show 42", "no job #42"),
        ("/frobnicate", "I don't know /frobnicate"),
    ],
)
async def test_bad_input_gets_a_reply_and_queues_nothing(
    emulator: TelegramEmulator, tmp_path: Path, text: str, expected: str
) -> None:
    async with running(make_config(tmp_path, emulator), with_engine=False) as app:
        reply = await say(emulator, ANN, TgChat.private(ANN), text)
        assert expected in reply
        assert await app.queue.queued_in_fair_order() == []


async def test_over_quota_is_refused(emulator: TelegramEmulator, tmp_path: Path) -> None:
    limits = SMALL_LIMITS.model_copy(update={"max_active_jobs_per_user": 2})
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator, limits=limits), with_engine=False) as app:
        for number in (1, 2):
            assert f"Job #{number}" in await say(emulator, ANN, chat, f"/imagine cat {number} --size 64x64")
        reply = await say(emulator, ANN, chat, "/imagine cat 3 --size 64x64")
        assert "the limit is 2" in reply
        assert len(await app.queue.queued_in_fair_order()) == 2


async def test_reroll_with_seed_and_queue_and_cancel(emulator: TelegramEmulator, tmp_path: Path) -> None:
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator), with_engine=False) as app:
        await say(emulator, ANN, chat, "/imagine a lighthouse --size 64x80 --steps 3")
        assert "Job #2" in await say(emulator, ANN, chat, "/reroll 1234")
        rerolled = await app.queue.get(2)
        assert rerolled.request.seed == 1234
        assert rerolled.request.prompt == "a lighthouse"
        assert (rerolled.request.width, rerolled.request.height, rerolled.request.steps) == (64, 80, 3)
        assert rerolled.parent_id == 1
        overview = await say(emulator, ANN, chat, "/queue")
        assert "Waiting: 2 jobs" in overview
        assert "#2" in overview
        assert "Cancelled job #2" in await say(emulator, ANN, chat, "/cancel")
        assert (await app.queue.get(2)).status is JobStatus.CANCELLED
        # The delivery loop finalises job 2's status message.
        status_id = int((await app.queue.get(2)).status_message_id or 0)
        edit = await emulator.wait_for(
            "editMessageText", lambda call: call.integer("message_id") == status_id
        )
        assert edit.params["text"].startswith("Cancelled job #2")


async def test_history_lists_jobs_with_reroll_buttons(emulator: TelegramEmulator, tmp_path: Path) -> None:
    chat = TgChat.private(BOB)
    async with running(make_config(tmp_path, emulator), with_engine=False):
        await say(emulator, BOB, chat, "/imagine first <b>cat</b> @everyone --size 64x64")
        await say(emulator, BOB, chat, "/imagine second cat --size 64x64")
        message_id = await emulator.send_text(BOB, chat, "/history")
        call = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
        assert "first <b>cat</b> @everyone" in call.params["text"]  # as typed: no parse_mode
        assert "parse_mode" not in call.params
        assert call.button_data() == ["reroll:2", "reroll:1"]


async def test_second_press_while_queued_does_not_queue_another(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator), with_engine=False) as app:
        history_id = await emulator.send_text(ANN, chat, "/imagine a kite --size 64x64")
        await emulator.wait_for("sendMessage", reply_to(chat.id, history_id))
        listing = await emulator.send_text(ANN, chat, "/history")
        history = await emulator.wait_for("sendMessage", reply_to(chat.id, listing))
        listing_id = history.response["message_id"]
        before = len(emulator.calls)
        await emulator.press_button(ANN, chat, listing_id, "reroll:1")
        first = await emulator.wait_for("answerCallbackQuery", after=before)
        assert first.params["text"] == "Queued as job #2."
        before = len(emulator.calls)
        await emulator.press_button(ANN, chat, listing_id, "reroll:1")
        second = await emulator.wait_for("answerCallbackQuery", after=before)
        assert second.params["text"] == "Already queued as job #2."
        assert [job.id for job in await app.queue.queued_in_fair_order()] == [1, 2]


async def test_a_button_on_a_message_too_old_to_show_still_works(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    """Telegram sends an old message as an InaccessibleMessage (date 0, no keyboard): the press is
    still the bot's to read, and the service's checks decide, as for any press."""
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator), with_engine=False) as app:
        await say(emulator, ANN, chat, "/imagine a kite --size 64x64")
        listing = await emulator.send_text(ANN, chat, "/history")
        history = await emulator.wait_for("sendMessage", reply_to(chat.id, listing))
        before = len(emulator.calls)
        await emulator.press_button(ANN, chat, history.response["message_id"], "reroll:1", inaccessible=True)
        answer = await emulator.wait_for("answerCallbackQuery", after=before)
        assert answer.params["text"] == "Queued as job #2."
        before = len(emulator.calls)
        await emulator.press_button(
            STRANGER, chat, history.response["message_id"], "frobnicate:1", inaccessible=True
        )
        refused = await emulator.wait_for("answerCallbackQuery", after=before)
        assert refused.params["show_alert"] == "true"
        assert [job.id for job in await app.queue.queued_in_fair_order()] == [1, 2]


async def test_unknown_forged_and_refused_buttons_are_answered(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    chat = TgChat.private(ANN)
    config = make_config(tmp_path, emulator, allowed_user_ids=(ANN.id,))
    async with running(config, with_engine=False) as app:
        await say(emulator, ANN, chat, "/imagine a kite --size 64x64")
        listing = await emulator.send_text(ANN, chat, "/history")
        history = await emulator.wait_for("sendMessage", reply_to(chat.id, listing))
        history_id = history.response["message_id"]
        for user, data, expected in [
            (ANN, "frobnicate:1", texts.UNKNOWN_BUTTON),  # not ours
            (ANN, "delete:1", texts.UNKNOWN_BUTTON),  # not a button of this message: forged
            (STRANGER, "reroll:1", texts.not_allowed_text()),
        ]:
            before = len(emulator.calls)
            await emulator.press_button(user, chat, history_id, data)
            answer = await emulator.wait_for("answerCallbackQuery", after=before)
            assert answer.params["text"] == expected
            assert answer.params["show_alert"] == "true"
        assert [job.id for job in await app.queue.queued_in_fair_order()] == [1]
        assert emulator.calls_of("deleteMessage") == []


async def test_wrong_token_is_a_clear_error_and_never_logged(
    emulator: TelegramEmulator,
    tmp_path: Path,
    queue: JobQueue,
    image_store: ImageStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "987654:WRONG-token-value-xyz"
    settings = make_config(tmp_path, emulator).telegram.model_copy(update={"token": SecretStr(wrong)})
    service = build_service(queue, image_store)
    frontend = TelegramFrontend(settings, service, LimitsSettings())
    with pytest.raises(FrontendStartError) as raised:
        await frontend.start()
    await frontend.stop()
    assert "Telegram rejected the bot token" in str(raised.value)
    assert "MAJICBOT_TELEGRAM_TOKEN" in str(raised.value)
    assert wrong not in str(raised.value)
    assert emulator.calls_of("getMe") == [] and emulator.calls[0].status == 401
    assert caplog.records, "PTB logs at DEBUG; the test must see its records"
    assert wrong not in caplog.text


async def test_token_never_reaches_the_logs(
    emulator: TelegramEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator), with_engine=False):
        await say(emulator, ANN, chat, "/imagine a cat --size 64x64")
    assert "getUpdates" in caplog.text  # the URLs were logged, with the token masked
    assert TOKEN not in caplog.text
    assert TOKEN.split(":")[1] not in caplog.text


async def test_webhook_mode_needs_the_secret_token(emulator: TelegramEmulator, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port for the webhook server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "hook-secret-value-42"
    config = make_config(
        tmp_path,
        emulator,
        mode="webhook",
        webhook_url="https://bot.example.org/telegram-hook",
        webhook_port=port,
        webhook_secret=secret,
    )
    chat = TgChat.private(ANN)
    async with running(config, with_engine=False) as app, aiohttp.ClientSession() as http:
        registered = await emulator.wait_for("setWebhook")
        assert registered.params["url"] == "https://bot.example.org/telegram-hook"
        assert registered.params["secret_token"] == secret
        assert emulator.calls_of("getUpdates") == []

        hook = f"http://127.0.0.1:{port}/telegram-hook"
        forged = emulator.message_update(STRANGER, chat, "/imagine forged --size 64x64")
        async with http.post(hook, json=forged) as response:
            assert response.status == 403
        update = emulator.message_update(ANN, chat, "/imagine a hooked fish --size 64x64")
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with http.post(hook, json=update, headers=headers) as response:
            assert response.status == 200
        message_id = update["message"]["message_id"]
        reply = await emulator.wait_for("sendMessage", reply_to(chat.id, message_id))
        assert "Job #1" in reply.params["text"]
        assert [job.request.prompt for job in await app.queue.queued_in_fair_order()] == ["a hooked fish"]


async def test_help_lists_every_command_and_every_flag_the_parser_takes(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    chat = TgChat.private(ANN)
    async with running(make_config(tmp_path, emulator), with_engine=False):
        commands = (await emulator.wait_for("setMyCommands")).json("commands")
        text = await say(emulator, ANN, chat, "/help")
    for command in commands:
        assert f"/{command['command']}" in text, command
    for flag in FLAGS:
        assert f"--{flag.name}" in text, flag.name
    assert "any message that is not a command is a prompt" in text


def test_a_set_records_its_album_with_the_buttons_message() -> None:
    recorded = result_message_id(17, [13, 14, 15, 16])
    assert recorded == "17 album 13,14,15,16"
    assert album_of(recorded, 17) == (13, 14, 15, 16)
    # The largest ids of a four-image album still fit the column.
    big = result_message_id(2**31 - 1, [2**31 - 5, 2**31 - 4, 2**31 - 3, 2**31 - 2])
    assert len(big) <= 64 and album_of(big, 2**31 - 1) == (2**31 - 5, 2**31 - 4, 2**31 - 3, 2**31 - 2)
    # Another message's Delete (a /show repost), a single image or a damaged value: nothing more.
    assert album_of(recorded, 20) == ()
    assert album_of(result_message_id(17), 17) == ()
    assert album_of("17 album 1-900", 17) == ()
    assert album_of(None, 17) == ()
