"""Moderation through the real Telegram and Discord clients and the app's wiring (config -> service): a
banned word, a ban and the hourly limit each get their refusal as a reply, and nothing is queued; the
operators' /ban, /unban and /bans (refused to anyone else); a spoiler-listed prompt's picture posted
behind a spoiler on Discord."""

from __future__ import annotations

from pathlib import Path

from bot.discord import DISCORD
from bot.settings import ModerationSettings
from bot.telegram import TELEGRAM
from storage.jobs import Requester
from tests.support.app_harness import running
from tests.support.discord_harness import answer_to, channel_post, content, emulated
from tests.support.discord_harness import make_config as discord_config
from tests.support.telegram_emulator import TelegramEmulator, TgChat, TgUser
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
        assert await app.queue.active_jobs(TELEGRAM, str(BOB.id)) == []

        sent = await emulator.send_text(BOB, bob_chat, "/imagine a quiet city --size 64x64")
        await emulator.wait_for("sendMessage", reply_to(bob_chat.id, sent), within_s=15)
        sent = await emulator.send_text(BOB, bob_chat, "/imagine another city --size 64x64")
        answer = await emulator.wait_for("sendMessage", reply_to(bob_chat.id, sent), within_s=15)
        assert answer.params["text"].startswith("You have sent 1 job in the last hour")
        assert len(await app.queue.active_jobs(TELEGRAM, str(BOB.id))) == 1

        operator = Requester(TELEGRAM, str(ANN.id), str(ANN.id), "ann")
        await app.service.ban(operator, str(BOB.id), reason="spam")
        sent = await emulator.send_text(BOB, bob_chat, "/reroll")
        answer = await emulator.wait_for("sendMessage", reply_to(bob_chat.id, sent), within_s=15)
        assert answer.params["text"].startswith("You are banned from using this bot (reason: spam)")


async def test_telegram_operators_ban_and_unban_and_a_banned_user_is_refused_everywhere(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    config = make_config(tmp_path, emulator, admin_user_ids=(ANN.id,))
    ann_chat, bob_chat = TgChat.private(ANN), TgChat.private(BOB)

    async def say(user: TgUser, chat: TgChat, text: str) -> str:
        sent = await emulator.send_text(user, chat, text)
        answer = await emulator.wait_for("sendMessage", reply_to(chat.id, sent), within_s=15)
        return str(answer.params["text"])

    async with running(config, with_engine=False):
        assert (await say(BOB, bob_chat, f"/ban {ANN.id}")).startswith("Only the bot's operators")
        assert (await say(BOB, bob_chat, "/bans")).startswith("Only the bot's operators")
        help_text = await say(BOB, bob_chat, "/help")
        assert "/settings" in help_text and "operators only" in help_text and "/ban" in help_text
        # Bob's settings menu, posted before the ban.
        sent = await emulator.send_text(BOB, bob_chat, "/settings")
        menu = await emulator.wait_for("sendMessage", reply_to(bob_chat.id, sent))

        assert (await say(ANN, ann_chat, "/ban")).startswith("Give the user's numeric id")
        banned = await say(ANN, ann_chat, f"/ban {BOB.id} spamming the queue")
        assert banned.startswith(f"Banned user {BOB.id} (reason: spamming the queue)")
        listed = await say(ANN, ann_chat, "/bans")
        assert f"{BOB.id}: since " in listed and f"by {ANN.id}, reason: spamming the queue" in listed

        refusal = "You are banned from using this bot (reason: spamming the queue)"
        for command in ("/settings", "/history", "/help", "a lighthouse"):
            assert (await say(BOB, bob_chat, command)).startswith(refusal), command
        mark = len(emulator.calls)
        await emulator.press_button(BOB, bob_chat, menu.response["message_id"], "set:ar")
        alert = await emulator.wait_for("answerCallbackQuery", after=mark)
        assert alert.params["text"].startswith(refusal) and alert.params["show_alert"] == "true"
        assert emulator.calls_of("editMessageText", after=mark) == []

        assert (
            await say(ANN, ann_chat, f"/unban {BOB.id}")
        ) == f"Unbanned user {BOB.id}: they can use the bot again."
        assert (await say(ANN, ann_chat, "/bans")) == "No one is banned."
        assert (await say(BOB, bob_chat, "/settings")).startswith("Your settings")


async def test_telegram_posts_a_spoiler_listed_prompts_photo_behind_a_spoiler(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    config = make_config(tmp_path, emulator)
    config = config.model_copy(update={"moderation": ModerationSettings(spoiler_patterns=("gh[o0]st",))})
    chat = TgChat.private(ANN)
    async with running(config):
        await emulator.send_text(ANN, chat, "/imagine a gh0st ship --size 64x64 --steps 1")
        await emulator.send_text(ANN, chat, "/imagine a plain ship --size 64x64 --steps 1")
        photos = await emulator.wait_for_count("sendPhoto", 2, within_s=60)
    spoilers = {photo.params["caption"].split("\n")[0]: photo.params.get("has_spoiler") for photo in photos}
    assert spoilers == {"a gh0st ship": "true", "a plain ship": "false"}


async def test_discord_bans_operators_only_banned_words_and_spoilers(tmp_path: Path) -> None:
    operator, user = 11, 22
    async with emulated() as emulator:
        config = discord_config(tmp_path, emulator, admin_user_ids=(operator,))
        config = config.model_copy(
            update={"moderation": ModerationSettings(banned_words=("forbidden",), spoiler_words=("ghost",))}
        )

        async def ask(user_id: int, name: str, options: dict[str, str] | None = None) -> str:
            interaction = await emulator.inject_slash(name, options, user_id=user_id)
            return content(await emulator.wait_for_call(answer_to(interaction), within=15))

        async with running(config) as app:
            refused = await ask(user, "ban", {"user": str(operator)})
            assert refused.startswith("Only the bot's operators")
            refused = await ask(user, "imagine", {"prompt": "a forbidden city --ar 1:1"})
            assert refused.startswith("Your prompt has a word or phrase that is not allowed")
            assert await app.queue.active_jobs(DISCORD, str(user)) == []

            # A prompt on the spoiler list: the picture is posted behind a spoiler, the rest as usual.
            assert "Job #1" in await ask(user, "imagine", {"prompt": "a ghost ship --ar 1:1 --seed 3"})
            post = await emulator.wait_for_call(channel_post(), within=60)
            (upload,) = post.files
            assert upload.filename == "SPOILER_majicbot-1-3.png"
            assert isinstance(post.payload, dict)
            (embed,) = post.payload["embeds"]
            assert "image" not in embed and "a ghost ship" in embed["description"]

            banned = await ask(operator, "ban", {"user": f"<@{user}>", "reason": "spam"})
            assert banned.startswith(f"Banned user {user} (reason: spam)")
            refusal = "You are banned from using this bot (reason: spam)"
            assert (await ask(user, "history")).startswith(refusal)
            assert (await ask(user, "settings")).startswith(refusal)
            click = await emulator.inject_click(post.answer["id"], "majicbot:reroll:1", user_id=user)
            assert content(await emulator.wait_for_call(answer_to(click))).startswith(refusal)
            assert len(await app.queue.history(DISCORD, str(user))) == 1  # nothing queued
            assert f"{user}: since " in await ask(operator, "bans")

            assert (await ask(operator, "unban", {"user": str(user)})).startswith(f"Unbanned user {user}")
            assert (await ask(user, "history")).startswith("Your latest pictures")
