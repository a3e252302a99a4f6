"""The Midjourney loop on Telegram, end to end (emulator, real PTB client, real engine worker with the
tiny backend): several images as an album with one message of U/V buttons, Upscale and Vary presses
(also after a restart), image prompts from a photo's caption and from a reply to a photo, /show,
lineage in /history, and every refusal reaching the user with nothing queued."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from bot.app import Application
from bot.settings import LimitsSettings, ModerationSettings
from bot.telegram import TELEGRAM
from storage.jobs import Job, JobOrigin
from storage.queue import JobNotFound
from tests.support.app_harness import SMALL_LIMITS, running
from tests.support.pictures import closest, distance, mean_colour, noise_png, solid_png
from tests.support.telegram_emulator import Call, TelegramEmulator, TgChat, TgUser
from tests.support.telegram_harness import ANN, make_config, reply_to, until

CHAT = TgChat.private(ANN)


async def images_of(app: Application, job: Job) -> list[bytes]:
    return [await app.images.read(image.path) for image in job.images]


async def delivered(app: Application, job_id: int) -> Job:
    async def done() -> bool:
        try:
            return (await app.queue.get(job_id)).delivered_at is not None
        except JobNotFound:  # not queued yet
            return False

    await until(done, within_s=30, what=f"job {job_id} delivered")
    return await app.queue.get(job_id)


def album_files(call: Call) -> list[bytes]:
    """The uploaded pictures of a sendMediaGroup call, in album order."""
    return [call.files[item["media"].removeprefix("attach://")] for item in json.loads(call.params["media"])]


def buttons_for(job_id: int) -> Callable[[Call], bool]:
    return lambda call: f"job #{job_id}" in call.params.get("text", "") and "reply_markup" in call.params


async def press(emulator: TelegramEmulator, message_id: int, data: str, user: TgUser = ANN) -> str:
    """Press a button under a message in Ann's chat; the text of the answer to the press."""
    before = len(emulator.calls)
    await emulator.press_button(user, CHAT, message_id, data)
    answer = await emulator.wait_for("answerCallbackQuery", after=before)
    return answer.params.get("text", "")


async def test_four_images_album_buttons_upscale_vary_show_and_history_after_a_restart(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    config = make_config(tmp_path, emulator)
    async with running(config) as app:
        asked = await emulator.send_text(ANN, CHAT, "/imagine a fox in a meadow --n 4 --size 64x64 --steps 1")
        status = await emulator.wait_for("sendMessage", reply_to(CHAT.id, asked))
        assert "job #1" in status.params["text"].lower() or "#1" in status.params["text"]
        album = await emulator.wait_for("sendMediaGroup", within_s=30)
        buttons = await emulator.wait_for("sendMessage", buttons_for(1), after=album.index)
        source = await delivered(app, 1)
        stored = await images_of(app, source)

    # One album of four photos (the stored PNGs, in order), then one message with the buttons.
    assert source.request.count == 4 and len(stored) == 4
    assert album_files(album) == stored
    assert [item["type"] for item in json.loads(album.params["media"])] == ["photo"] * 4
    assert buttons.params["text"].startswith("a fox in a meadow\n")
    assert buttons.button_data() == [
        *("upscale:1", "upscale:1:2", "upscale:1:3", "upscale:1:4"),
        *("vary:1", "vary:1:2", "vary:1:3", "vary:1:4"),
        *("reroll:1", "png:1", "delete:1"),
    ]
    assert [len(row) for row in buttons.json("reply_markup")["inline_keyboard"]] == [4, 4, 3]
    assert "parse_mode" not in buttons.params
    buttons_id = buttons.response["message_id"]

    # A new chat process: the buttons posted by the first one still work.
    async with running(config) as app:
        assert await press(emulator, buttons_id, "upscale:1:2") == "Queued as job #2."
        upscaled = await delivered(app, 2)
        assert (upscaled.origin, upscaled.parent_id, upscaled.parent_image_index) == (JobOrigin.UPSCALE, 1, 1)
        assert (upscaled.request.width, upscaled.request.height, upscaled.request.count) == (128, 128, 1)
        photo = await emulator.wait_for("sendPhoto", lambda call: "job #2" in call.params.get("caption", ""))
        assert "upscale 2x of #1 image 2" in photo.params["caption"]
        (big,) = await images_of(app, upscaled)
        assert closest(big, stored) == 1, "U2 must start from the second image"

        # V1: Vary (Subtle) of the first image, as many images as the set.
        assert await press(emulator, buttons_id, "vary:1") == "Queued as job #3."
        varied = await delivered(app, 3)
        assert (varied.origin, varied.parent_image_index, varied.request.strength) == (
            JobOrigin.VARY_SUBTLE,
            0,
            0.35,
        )
        assert all(closest(image, stored) == 0 for image in await images_of(app, varied))
        assert len(emulator.calls_of("sendMediaGroup")) == 2

        # Vary (Strong) on the single upscaled picture.
        assert photo.button_data()[:3] == ["vary:2", "varystrong:2", "upscale:2"]
        assert await press(emulator, photo.response["message_id"], "varystrong:2") == "Queued as job #4."
        strong = await delivered(app, 4)
        assert (strong.origin, strong.parent_id, strong.request.strength) == (JobOrigin.VARY_STRONG, 2, 0.7)
        (strong_png,) = await images_of(app, strong)
        subtle_distance = distance(big, (await images_of(app, varied))[0])
        assert distance(big, strong_png) > 0 and subtle_distance > 0

        # /history names each job's origin and parent.
        before = len(emulator.calls)
        await emulator.send_text(ANN, CHAT, "/history")
        history = await emulator.wait_for(
            "sendMessage", lambda c: "Your latest" in c.params["text"], after=before
        )
        lines = history.params["text"].splitlines()
        assert any(line.startswith("#4 ") and "vary (strong) of #2 image 1" in line for line in lines), lines
        assert any(line.startswith("#3 ") and "vary (subtle) of #1 image 1" in line for line in lines), lines
        assert any(line.startswith("#2 ") and "upscale 2x of #1 image 2" in line for line in lines), lines
        assert any(line.startswith("#1 ") and "4 images" in line for line in lines), lines

        # /show 1: the album again, as a reply, then its buttons.
        before = len(emulator.calls)
        asked = await emulator.send_text(ANN, CHAT, "/show 1")
        shown = await emulator.wait_for("sendMediaGroup", reply_to(CHAT.id, asked), after=before)
        assert album_files(shown) == stored
        again = await emulator.wait_for("sendMessage", buttons_for(1), after=shown.index)
        assert again.button_data() == buttons.button_data()

        # Original PNG under a set: every image's lossless PNG, as an album of files.
        before = len(emulator.calls)
        assert await press(emulator, buttons_id, "png:1") == "Sending the original PNG…"
        originals = await emulator.wait_for("sendMediaGroup", after=before)
        assert [item["type"] for item in json.loads(originals.params["media"])] == ["document"] * 4
        assert album_files(originals) == stored

        # Delete under the set takes down the album too.
        album_ids = [message["message_id"] for message in album.response]
        before = len(emulator.calls)
        assert await press(emulator, buttons_id, "delete:1") == "Deleted job #1's image."
        deleted = {call.integer("message_id") for call in emulator.calls_of("deleteMessage", after=before)}
        assert deleted == {*album_ids, buttons_id}


async def test_image_prompts_from_a_caption_and_from_a_reply_to_a_photo(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    async with running(make_config(tmp_path, emulator)) as app:
        red = solid_png((220, 20, 20))
        await emulator.send_picture(ANN, CHAT, red, "/imagine a barn --strength 0.3 --steps 1")
        first = await delivered(app, 1)
        assert (first.origin, first.request.strength, first.has_input_image) == (
            JobOrigin.IMAGE_PROMPT,
            0.3,
            True,
        )
        (made,) = await images_of(app, first)
        r, g, b = mean_colour(made)
        assert r > 140 and g < 110 and b < 110, "70% of the red picture must show"
        assert emulator.calls_of("getFile")

        # A photo without a caption, then /imagine as a reply to it (the default strength).
        blue = solid_png((20, 20, 220), size=(96, 64))
        photo_id = await emulator.send_picture(ANN, CHAT, blue)
        await emulator.send_reply(ANN, CHAT, "/imagine a lake --steps 1", reply_to=photo_id)
        second = await delivered(app, 2)
        assert (second.origin, second.request.strength) == (JobOrigin.IMAGE_PROMPT, 0.8)
        # Drawn at the picture's aspect ratio within the limits.
        assert second.request.width > second.request.height
        (lake,) = await images_of(app, second)
        assert mean_colour(lake)[2] > mean_colour(made)[2]

        # A picture sent as a file works too.
        await emulator.send_picture(ANN, CHAT, red, "/imagine a barn at dusk --steps 1", as_document=True)
        assert (await delivered(app, 3)).origin is JobOrigin.IMAGE_PROMPT

        # In a private chat a plain caption is a prompt too, as plain text is.
        await emulator.send_picture(ANN, CHAT, red, "a red barn in fog --steps 1 --strength 0.5")
        plain = await delivered(app, 4)
        assert (plain.origin, plain.request.prompt, plain.request.strength) == (
            JobOrigin.IMAGE_PROMPT,
            "a red barn in fog",
            0.5,
        )

        # The caption names what made the job.
        photo = await emulator.wait_for("sendPhoto", lambda c: "job #1" in c.params.get("caption", ""))
        assert "from your image" in photo.params["caption"]


async def test_every_refusal_reaches_the_user_and_queues_nothing(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    limits = LimitsSettings(**{**SMALL_LIMITS.model_dump(), "max_input_image_bytes": 4096})
    config = make_config(tmp_path, emulator, limits=limits)

    async def refused(text: str, picture: bytes | None = None, *, as_document: bool = False) -> str:
        before = len(emulator.calls)
        if picture is None:
            asked = await emulator.send_text(ANN, CHAT, text)
        else:
            asked = await emulator.send_picture(ANN, CHAT, picture, text, as_document=as_document)
        return str(
            (await emulator.wait_for("sendMessage", reply_to(CHAT.id, asked), after=before)).params["text"]
        )

    async with running(config) as app:
        small = solid_png((10, 200, 10))
        assert (await refused("/imagine a cat --strength 1.5", small)).startswith(
            "--strength 1.5 is out of range"
        )
        assert (await refused("/imagine a cat --strength 0.5")).startswith("--strength goes with an image")
        assert (await refused("/imagine a cat --n 7")).startswith("--n 7 is out of range: ask for 1 to 4")
        assert (await refused("/imagine a cat --n two")).startswith("--n must be a whole number")
        before = len(emulator.calls)
        too_big = await refused("/imagine a cat", noise_png((64, 64)))
        assert too_big.startswith("That image is ") and "the limit is 4 KiB" in too_big
        # The announced size was enough: the file was never fetched.
        assert not emulator.calls_of("getFile", after=before)
        # A client that does not announce the size: fetched, then refused all the same.
        emulator.hide_file_sizes = True
        before = len(emulator.calls)
        assert (await refused("/imagine a cat", noise_png((64, 64)))).startswith("That image is ")
        assert emulator.calls_of("getFile", after=before)
        emulator.hide_file_sizes = False
        not_an_image = await refused("/imagine a cat", b"GIF89a" + bytes(64), as_document=True)
        assert "not an image I can read" in not_an_image or "send a PNG" in not_an_image
        assert await history_of_ann(app) == []

        # Upscale past the size limit, and vary on a job whose picture is gone or that was deleted.
        await emulator.send_text(ANN, CHAT, "/imagine a tower --size 256x256 --steps 1")
        large = await delivered(app, 1)
        photo = await emulator.wait_for("sendPhoto", lambda c: "job #1" in c.params.get("caption", ""))
        message_id = photo.response["message_id"]
        assert "cannot be upscaled" in await press(emulator, message_id, "upscale:1")
        await app.queue.forget_images([large.id])
        assert "has expired" in await press(emulator, message_id, "vary:1")
        assert [job.id for job in await history_of_ann(app)] == [1]

    with sqlite3.connect(tmp_path / "majicbot.db") as database:
        database.execute("DELETE FROM jobs WHERE id = 1")
    async with running(config):
        assert "was deleted" in await press(emulator, message_id, "varystrong:1")


async def history_of_ann(app: Application) -> list[Job]:
    return list(await app.queue.history(TELEGRAM, str(ANN.id), 10))


async def test_a_spoiler_listed_set_is_an_album_of_spoilered_photos(
    emulator: TelegramEmulator, tmp_path: Path
) -> None:
    config = make_config(tmp_path, emulator)
    config = config.model_copy(update={"moderation": ModerationSettings(spoiler_words=("ghost",))})
    async with running(config):
        await emulator.send_text(ANN, CHAT, "/imagine a ghost ship --n 2 --size 64x64 --steps 1")
        album = await emulator.wait_for("sendMediaGroup", within_s=30)
    assert [item.get("has_spoiler") for item in json.loads(album.params["media"])] == [True, True]
