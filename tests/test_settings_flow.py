"""/settings end to end on both platforms: the real PTB and discord.py clients against the emulators,
the app's wiring and a SQLite file. Shown with its menu, changed from the menu (Telegram's inline
keyboard, Discord's select menus) and by typing, used by the next /imagine (a flag still wins), reset;
and the menu posted before a restart of the chat process still works after it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bot.app import Application
from bot.discord import DISCORD
from bot.telegram import TELEGRAM
from storage.jobs import Job, Platform
from tests.support.app_harness import running
from tests.support.discord_emulator import DiscordEmulator, Injected, RecordedCall
from tests.support.discord_harness import answer_to, callback_of, content, emulated
from tests.support.discord_harness import make_config as discord_config
from tests.support.telegram_emulator import Call, TelegramEmulator, TgChat
from tests.support.telegram_harness import ANN, BOB, GROUP, reply_to
from tests.support.telegram_harness import make_config as telegram_config

OWNER = 4242
WIDE = "Aspect ratio: 16:9, 256x144"  # 16:9 within the test limits (sides up to 256)


def edit_of(message_id: int) -> Callable[[Call], bool]:
    return lambda call: call.integer("message_id") == message_id


async def newest_job(app: Application, platform: Platform, user_id: int) -> Job:
    return (await app.queue.history(platform, str(user_id), 1))[0]


async def test_telegram_settings_from_the_keyboard_and_typed_survive_a_restart(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    chat = TgChat.private(ANN)
    config = telegram_config(tmp_path, emulator)
    async with running(config, with_engine=False):
        sent = await emulator.send_text(ANN, chat, "/settings")
        shown = await emulator.wait_for("sendMessage", reply_to(chat.id, sent))
        assert shown.params["text"].startswith("Your settings")
        assert "Aspect ratio: 1:1, 256x256 (the default)" in shown.params["text"]
        assert shown.button_data() == ["set:ar", "set:steps", "set:images", "set:progress", "set:reset"]
        menu = shown.response["message_id"]

        # Two levels: pick the setting, then its value; the message is edited in place.
        mark = len(emulator.calls)
        await emulator.press_button(ANN, chat, menu, "set:ar")
        choices = await emulator.wait_for("editMessageText", edit_of(menu), after=mark)
        assert "set:ar=16:9" in choices.button_data() and choices.button_data()[-1] == "set:menu"
        assert all(len(data.encode()) <= 64 for data in choices.button_data())
        mark = len(emulator.calls)
        await emulator.press_button(ANN, chat, menu, "set:ar=16:9")
        chosen = await emulator.wait_for("editMessageText", edit_of(menu), after=mark)
        assert WIDE in chosen.params["text"]
        assert chosen.button_data()[0] == "set:ar"  # back at the top menu
        assert len(emulator.calls_of("answerCallbackQuery")) == 2  # every press answered

        # Free text is typed.
        sent = await emulator.send_text(ANN, chat, "/settings style watercolor")
        typed = await emulator.wait_for("sendMessage", reply_to(chat.id, sent))
        assert 'Style suffix: "watercolor"' in typed.params["text"] and WIDE in typed.params["text"]
        sent = await emulator.send_text(ANN, chat, "/settings steps 99")
        refused = await emulator.wait_for("sendMessage", reply_to(chat.id, sent))
        assert refused.params["text"].startswith("Steps 99 is out of range: use a whole number from 1 to 8")

    # A new chat process: the menu posted by the first one still works.
    async with running(config, with_engine=False) as app:
        mark = len(emulator.calls)
        await emulator.press_button(ANN, chat, menu, "set:steps")
        await emulator.wait_for("editMessageText", edit_of(menu), after=mark)
        mark = len(emulator.calls)
        await emulator.press_button(ANN, chat, menu, "set:steps=4")
        chosen = await emulator.wait_for("editMessageText", edit_of(menu), after=mark)
        assert "Steps: 4" in chosen.params["text"]

        sent = await emulator.send_text(ANN, chat, "/imagine a harbour at dawn")
        await emulator.wait_for("sendMessage", reply_to(chat.id, sent))
        job = await newest_job(app, TELEGRAM, ANN.id)
        assert (job.request.width, job.request.height, job.request.steps) == (256, 144, 4)
        assert job.request.prompt == "a harbour at dawn, watercolor"

        # A flag on the command wins over the setting.
        sent = await emulator.send_text(ANN, chat, "/imagine a harbour at noon --ar 1:1 --steps 2")
        await emulator.wait_for("sendMessage", reply_to(chat.id, sent))
        job = await newest_job(app, TELEGRAM, ANN.id)
        assert (job.request.width, job.request.height, job.request.steps) == (256, 256, 2)

        sent = await emulator.send_text(ANN, chat, "/settings reset")
        reset = await emulator.wait_for("sendMessage", reply_to(chat.id, sent))
        assert "Aspect ratio: 1:1, 256x256 (the default)" in reset.params["text"]
        assert "Style suffix: none" in reset.params["text"]


async def test_telegram_a_settings_menu_in_a_group_answers_only_its_owner(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    async with running(telegram_config(tmp_path, emulator), with_engine=False):
        sent = await emulator.send_text(ANN, GROUP, "/settings")
        menu = (await emulator.wait_for("sendMessage", reply_to(GROUP.id, sent))).response["message_id"]
        mark = len(emulator.calls)
        await emulator.press_button(BOB, GROUP, menu, "set:ar")
        alert = await emulator.wait_for("answerCallbackQuery", after=mark)
        assert alert.params["text"] == "These are someone else's settings; send /settings for yours."
        assert emulator.calls_of("editMessageText", after=mark) == []
        await emulator.press_button(ANN, GROUP, menu, "set:ar")
        await emulator.wait_for("editMessageText", edit_of(menu), after=mark)


def select_ids(call: RecordedCall) -> list[str]:
    assert isinstance(call.payload, dict)
    return [item["custom_id"] for row in call.payload["components"] for item in row["components"]]


async def ask(emulator: DiscordEmulator, name: str, options: dict[str, str | bool] | None = None) -> str:
    interaction = await emulator.inject_slash(name, options, user_id=OWNER)
    return content(await emulator.wait_for_call(answer_to(interaction)))


async def pick(emulator: DiscordEmulator, message_id: str, setting: str, value: str) -> tuple[Injected, str]:
    interaction = await emulator.inject_select(message_id, f"majicbot:set:{setting}", [value], user_id=OWNER)
    return interaction, content(await emulator.wait_for_call(answer_to(interaction)))


async def test_discord_settings_from_selects_and_options_survive_a_restart(tmp_path: Path) -> None:
    async with emulated() as emulator:
        config = discord_config(tmp_path, emulator)
        async with running(config, with_engine=False):
            shown = await emulator.inject_slash("settings", user_id=OWNER)
            answer = await emulator.wait_for_call(answer_to(shown))
            assert content(answer).startswith("Your settings")
            # Discord changes them with selects and options, not typed words.
            assert "Pick new values below" in content(answer) and "/settings ar 16:9" not in content(answer)
            assert select_ids(answer) == [
                f"majicbot:set:{name}" for name in ("ar", "steps", "images", "progress")
            ]
            assert isinstance(answer.payload, dict)
            for row in answer.payload["components"]:
                (select,) = row["components"]
                assert select["type"] == 3 and 1 <= len(select["options"]) <= 25
            ack = await emulator.wait_for_call(callback_of(shown))
            assert ack.payload == {"type": 5, "data": {"flags": 64}}  # ephemeral
            # The selects sit on the ephemeral answer: a pick carries that message.
            original = emulator.original_response(shown)
            assert original is not None
            emulator.messages[original["id"]] = original

            chosen, text = await pick(emulator, original["id"], "ar", "16:9")
            assert WIDE in text
            ack = await emulator.wait_for_call(callback_of(chosen))
            assert ack.payload == {"type": 6}  # the menu's own message is updated in place

            text = await ask(emulator, "settings", {"style": "watercolor", "negative": "text, watermark"})
            assert 'Style suffix: "watercolor"' in text and 'Negative prompt: "text, watermark"' in text

        async with running(config, with_engine=False) as app:
            await emulator.wait_connected()
            _, text = await pick(emulator, original["id"], "steps", "4")
            assert "Steps: 4" in text and WIDE in text

            assert "Job #" in await ask(emulator, "imagine", {"prompt": "a harbour at dawn"})
            job = await newest_job(app, DISCORD, OWNER)
            assert (job.request.width, job.request.height, job.request.steps) == (256, 144, 4)
            assert job.request.prompt == "a harbour at dawn, watercolor"
            assert job.request.negative_prompt == "text, watermark"

            assert "Job #" in await ask(emulator, "imagine", {"prompt": "a harbour --ar 3:2 --no people"})
            job = await newest_job(app, DISCORD, OWNER)
            assert (job.request.width, job.request.height) == (256, 160)
            assert job.request.negative_prompt == "people"

            text = await ask(emulator, "settings", {"reset": True})
            assert "Aspect ratio: 1:1, 256x256 (the default)" in text and "Style suffix: none" in text
