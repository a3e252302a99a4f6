"""The Midjourney loop on Discord, end to end (emulator, real discord.py client, real engine worker with
the tiny backend): the n option and --n as one message with every image as a file and U/V buttons,
Upscale and Vary clicks (also after a restart), an image prompt from an attachment, /show, lineage in
/history and the refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.app import Application
from bot.discord import DISCORD
from bot.settings import LimitsSettings, ModerationSettings
from storage.jobs import Job, JobOrigin
from storage.queue import JobNotFound
from tests.support.app_harness import SMALL_LIMITS, running
from tests.support.discord_emulator import DiscordEmulator, Injected, RecordedCall
from tests.support.discord_harness import answer_to, callback_of, channel_post, content, emulated, make_config
from tests.support.pictures import closest, mean_colour, noise_png, solid_png
from tests.support.telegram_harness import until

OWNER = 4242
STRANGER = 777


def button_ids(call: RecordedCall) -> list[list[str]]:
    """The custom ids of a message's buttons, row by row."""
    assert isinstance(call.payload, dict)
    return [[button["custom_id"] for button in row["components"]] for row in call.payload["components"]]


async def delivered(app: Application, job_id: int) -> Job:
    async def done() -> bool:
        try:
            return (await app.queue.get(job_id)).delivered_at is not None
        except JobNotFound:
            return False

    await until(done, within_s=30, what=f"job {job_id} delivered")
    return await app.queue.get(job_id)


async def images_of(app: Application, job: Job) -> list[bytes]:
    return [await app.images.read(image.path) for image in job.images]


async def answered(emulator: DiscordEmulator, interaction: Injected) -> str:
    ack = await emulator.wait_for_call(callback_of(interaction), within=5)
    assert ack.arrived - interaction.sent < 3.0
    return content(await emulator.wait_for_call(answer_to(interaction)))


def post_of(job_id: int) -> object:
    def matches(call: RecordedCall) -> bool:
        if not channel_post()(call) or not isinstance(call.payload, dict):
            return False
        return any(f"majicbot:reroll:{job_id}" in ids for ids in button_ids(call))

    return matches


async def test_four_images_in_one_message_with_u_and_v_buttons_that_work_after_a_restart(
    tmp_path: Path,
) -> None:
    async with emulated() as emulator:
        config = make_config(tmp_path, emulator)
        async with running(config) as app:
            asked = await emulator.inject_slash(
                "imagine", {"prompt": "a koi pond --size 64x64 --steps 1", "n": 4}, user_id=OWNER
            )
            assert "Job #1" in await answered(emulator, asked)
            post = await emulator.wait_for_call(post_of(1), within=60)  # type: ignore[arg-type]
            source = await delivered(app, 1)
            stored = await images_of(app, source)

        # One message: the four PNGs as files, an embed, and the buttons in rows of at most five.
        assert source.request.count == 4
        assert [(f.filename, f.data) for f in post.files] == [
            (f"majicbot-1-{index + 1}.png", png) for index, png in enumerate(stored)
        ]
        assert isinstance(post.payload, dict)
        assert post.payload["allowed_mentions"] == {"parse": []}
        assert button_ids(post) == [
            [f"majicbot:upscale:1{suffix}" for suffix in ("", ":2", ":3", ":4")],
            [f"majicbot:vary:1{suffix}" for suffix in ("", ":2", ":3", ":4")],
            ["majicbot:reroll:1", "majicbot:details:1", "majicbot:delete:1"],
        ]
        labels = [[b["label"] for b in row["components"]] for row in post.payload["components"]]
        assert labels[:2] == [["U1", "U2", "U3", "U4"], ["V1", "V2", "V3", "V4"]]
        message_id = post.answer["id"]

        # A new chat process: U2 and V3 from the old message still work.
        async with running(config) as app:
            await emulator.wait_connected()
            u2 = await emulator.inject_click(message_id, "majicbot:upscale:1:2", user_id=OWNER)
            assert "Job #2" in await answered(emulator, u2)
            upscaled = await delivered(app, 2)
            assert (upscaled.origin, upscaled.parent_image_index) == (JobOrigin.UPSCALE, 1)
            assert (upscaled.request.width, upscaled.request.height) == (128, 128)
            (big,) = await images_of(app, upscaled)
            assert closest(big, stored) == 1
            single = await emulator.wait_for_call(post_of(2), within=30)  # type: ignore[arg-type]
            assert button_ids(single)[0] == [
                "majicbot:vary:2",
                "majicbot:varystrong:2",
                "majicbot:upscale:2",
            ]
            assert isinstance(single.payload, dict)
            fields = {f["name"]: f["value"] for f in single.payload["embeds"][0]["fields"]}
            assert fields["Made by"] == "upscale 2x of #1 image 2"

            v3 = await emulator.inject_click(message_id, "majicbot:vary:1:3", user_id=OWNER)
            assert "Job #3" in await answered(emulator, v3)
            varied = await delivered(app, 3)
            assert (varied.origin, varied.parent_image_index, varied.request.count) == (
                JobOrigin.VARY_SUBTLE,
                2,
                4,
            )
            assert all(closest(png, stored) == 2 for png in await images_of(app, varied))

            strong = await emulator.inject_click(single.answer["id"], "majicbot:varystrong:2", user_id=OWNER)
            assert "Job #4" in await answered(emulator, strong)
            assert (await delivered(app, 4)).origin is JobOrigin.VARY_STRONG

            # Someone else's picture: Vary and Upscale are for its owner.
            refused = await emulator.inject_click(message_id, "majicbot:upscale:1:2", user_id=STRANGER)
            assert "is not yours" in await answered(emulator, refused)

            history = await emulator.inject_slash("history", user_id=OWNER)
            lines = (await answered(emulator, history)).splitlines()
            assert any(line.startswith("#4 ") and "vary (strong) of #2 image 1" in line for line in lines)
            assert any(line.startswith("#3 ") and "vary (subtle) of #1 image 3" in line for line in lines)

            shown = await emulator.inject_slash("show", {"job": 1}, user_id=OWNER)
            await emulator.wait_for_call(callback_of(shown))
            reply = await emulator.wait_for_call(lambda c: answer_to(shown)(c) and bool(c.files))
            assert [f.data for f in reply.files] == stored
            assert button_ids(reply) == button_ids(post)

            details = await emulator.inject_click(single.answer["id"], "majicbot:details:2", user_id=OWNER)
            await emulator.wait_for_call(callback_of(details))
            text = await emulator.wait_for_call(answer_to(details))
            assert isinstance(text.payload, dict)
            description = text.payload["embeds"][0]["description"]
            assert "Made by: upscale 2x of #1 image 2" in description and "Strength: 0.3" in description


async def test_an_attached_image_is_the_prompts_start_and_refusals_reach_the_user(tmp_path: Path) -> None:
    limits = LimitsSettings(**{**SMALL_LIMITS.model_dump(), "max_input_image_bytes": 4096})
    async with emulated() as emulator, running(make_config(tmp_path, emulator, limits=limits)) as app:
        green = solid_png((20, 210, 20))
        asked = await emulator.inject_slash(
            "imagine",
            {"prompt": "a hill --steps 1", "strength": 0.3},
            attachments={"image": ("hill.png", green)},
            user_id=OWNER,
        )
        assert "Job #1" in await answered(emulator, asked)
        job = await delivered(app, 1)
        assert (job.origin, job.request.strength) == (JobOrigin.IMAGE_PROMPT, 0.3)
        (made,) = await images_of(app, job)
        red, green_mean, blue = mean_colour(made)
        assert green_mean > 140 and red < 110 and blue < 110
        assert emulator.calls_matching(lambda c: c.route.startswith("GET /user-attachments"))

        async def refusal(options: dict[str, str | int | float], image: bytes | None = None) -> str:
            attachments = {} if image is None else {"image": ("x.png", image)}
            interaction = await emulator.inject_slash(
                "imagine", options, attachments=attachments, user_id=OWNER
            )
            return await answered(emulator, interaction)

        assert (await refusal({"prompt": "a hill", "strength": 2.0}, green)).startswith("--strength 2 is out")
        assert (await refusal({"prompt": "a hill", "strength": 0.5})).startswith(
            "--strength goes with an image"
        )
        assert (await refusal({"prompt": "a hill --n 9"})).startswith("--n 9 is out of range")
        downloads = len(emulator.calls_matching(lambda c: c.route.startswith("GET /user-attachments")))
        too_big = await refusal({"prompt": "a hill"}, noise_png((64, 64)))
        assert too_big.startswith("That image is ") and "the limit is 4 KiB" in too_big
        # Refused by its announced size: never downloaded.
        assert (
            len(emulator.calls_matching(lambda c: c.route.startswith("GET /user-attachments"))) == downloads
        )
        assert "not an image I can read" in await refusal({"prompt": "a hill"}, b"not a picture at all")
        assert [j.id for j in await app.queue.history(DISCORD, str(OWNER), 10)] == [1]

        # Upscale past the size limit.
        await emulator.inject_slash("imagine", {"prompt": "a wall --size 256x256 --steps 1"}, user_id=OWNER)
        await delivered(app, 2)
        post = await emulator.wait_for_call(post_of(2), within=30)  # type: ignore[arg-type]
        click = await emulator.inject_click(post.answer["id"], "majicbot:upscale:2", user_id=OWNER)
        assert "cannot be upscaled" in await answered(emulator, click)

        # Vary on a picture that is gone (expired), and on a job that was deleted.
        await app.queue.forget_images([2])
        click = await emulator.inject_click(post.answer["id"], "majicbot:vary:2", user_id=OWNER)
        assert "has expired" in await answered(emulator, click)
        with sqlite3.connect(tmp_path / "majicbot.db") as database:
            database.execute("DELETE FROM jobs WHERE id = 2")
        click = await emulator.inject_click(post.answer["id"], "majicbot:varystrong:2", user_id=OWNER)
        assert "was deleted" in await answered(emulator, click)


async def test_a_spoiler_listed_set_is_posted_as_spoilered_files(tmp_path: Path) -> None:
    async with emulated() as emulator:
        config = make_config(tmp_path, emulator)
        config = config.model_copy(update={"moderation": ModerationSettings(spoiler_words=("ghost",))})
        async with running(config):
            await emulator.inject_slash(
                "imagine", {"prompt": "a ghost ship --size 64x64 --steps 1", "n": 2}, user_id=OWNER
            )
            post = await emulator.wait_for_call(post_of(1), within=60)  # type: ignore[arg-type]
    assert [f.filename for f in post.files] == ["SPOILER_majicbot-1-1.png", "SPOILER_majicbot-1-2.png"]
