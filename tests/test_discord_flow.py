"""/imagine end to end on Discord: the real application, engine worker (tiny backend) and discord.py
client against the emulator, over loopback sockets."""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from pathlib import Path

import pytest

from bot.discord import DISCORD, presenter
from storage.jobs import JobStatus
from tests.support.app_harness import running
from tests.support.discord_emulator import DiscordEmulator, Injected, RecordedCall
from tests.support.discord_harness import (
    TOKEN,
    answer_to,
    callback_of,
    channel_post,
    content,
    emulated,
    make_config,
)

OWNER = 4242
STRANGER = 777
EDIT_INTERVAL_S = 1.0


def button_ids(call: RecordedCall) -> list[str]:
    assert isinstance(call.payload, dict)
    return [button["custom_id"] for row in call.payload["components"] for button in row["components"]]


async def imagine(
    emulator: DiscordEmulator, prompt: str, user_id: int = OWNER, **where: int | None
) -> Injected:
    interaction = await emulator.inject_slash("imagine", {"prompt": prompt}, user_id=user_id, **where)  # type: ignore[arg-type]
    ack = await emulator.wait_for_call(callback_of(interaction), within=5)
    assert ack.arrived - interaction.sent < 3.0, "acknowledged too late: Discord would have dropped it"
    return interaction


async def test_imagine_defers_shows_progress_and_posts_the_png_with_buttons(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TINY_BACKEND_STEP_S", "0.6")
    async with emulated() as emulator:
        config = make_config(tmp_path, emulator, progress_edit_interval_s=EDIT_INTERVAL_S)
        async with running(config) as app:
            interaction = await imagine(
                emulator, "@everyone a [slow] lighthouse --steps 6 --seed 7 --ar 16:9"
            )
            post = await emulator.wait_for_call(channel_post(), within=60)
            await emulator.wait_for_call(lambda c: answer_to(interaction)(c) and "posted" in content(c))
            edits = emulator.calls_matching(answer_to(interaction))
            job = (await app.queue.history(DISCORD, str(OWNER)))[0]
            stored = await app.images.read(job.result_path or "")

    # Queue position first, then steps, throttled; the last edit points at the posted image.
    texts = [content(edit) for edit in edits]
    assert "queued at position 1" in texts[0] or "is running" in texts[0] or "starting" in texts[0]
    assert any("step" in text and "of 6" in text for text in texts), texts
    assert "posted in this channel" in texts[-1]
    assert len(set(texts)) == len(texts), "unchanged text was sent again"
    progress = [edit for edit in edits if "step" in content(edit)]
    gaps = [b.arrived - a.arrived for a, b in itertools.pairwise(progress)]
    assert all(gap >= EDIT_INTERVAL_S for gap in gaps), gaps

    # The image: an ordinary channel message with the bot token, the stored PNG, an embed, its buttons.
    assert post.headers["Authorization"] == f"Bot {TOKEN}"
    assert job.status is JobStatus.DONE
    assert [(f.filename, f.data) for f in post.files] == [(f"majicbot-{job.id}-7.png", stored)]
    assert button_ids(post) == [
        f"majicbot:vary:{job.id}",
        f"majicbot:varystrong:{job.id}",
        f"majicbot:upscale:{job.id}",
        f"majicbot:reroll:{job.id}",
        f"majicbot:details:{job.id}",
        f"majicbot:delete:{job.id}",
    ]
    assert isinstance(post.payload, dict)
    (embed,) = post.payload["embeds"]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Seed"] == "7" and fields["Steps"] == "6" and fields["Size"] == "256x144"
    assert fields["Job"] == f"#{job.id}" and fields["Time"].endswith(" s")
    assert "@everyone a [slow] lighthouse" in embed["description"]
    assert embed["image"]["url"] == f"attachment://majicbot-{job.id}-7.png"

    # Nothing the bot sent could ping anyone, and the token never reached a log line.
    for call in emulator.calls:
        if (
            call.method in ("POST", "PATCH")
            and isinstance(call.payload, dict)
            and "callback" not in call.route
        ):
            assert call.payload.get("allowed_mentions") == {"parse": []}, call.route
    assert all(TOKEN not in record.getMessage() for record in caplog.records)
    # The operator is told how to add the bot to a server.
    invite = f"client_id={emulator.application_id}&scope=bot+applications.commands&permissions="
    assert any(invite in record.getMessage() for record in caplog.records)


async def test_buttons_work_after_a_restart(tmp_path: Path) -> None:
    async with emulated() as emulator:
        config = make_config(tmp_path, emulator)
        async with running(config):
            await imagine(emulator, "a quiet harbour --seed 11 --ar 1:1")
            first = await emulator.wait_for_call(channel_post(), within=60)
        message_id = first.answer["id"]
        (source_id,) = {int(custom_id.rsplit(":", 1)[1]) for custom_id in button_ids(first)}

        # A new process with the same database: the message's buttons must still work.
        async with running(config, with_engine=False) as app:
            await emulator.wait_connected()
            clicks = [
                await emulator.inject_click(message_id, f"majicbot:reroll:{source_id}", user_id=OWNER)
                for _ in range(2)
            ]
            answers = [content(await emulator.wait_for_call(answer_to(click))) for click in clicks]
            queued = await app.queue.queued_in_fair_order()
            assert len(queued) == 1, answers
            (reroll,) = queued
            assert reroll.parent_id == source_id and reroll.request.prompt == "a quiet harbour"
            assert reroll.request.seed != 11
            # The two clicks race; whichever lost finds the winner's job.
            assert all(f"#{reroll.id}" in answer for answer in answers)
            assert sum("already asked" in answer for answer in answers) == 1, answers

            details = await emulator.inject_click(
                message_id, f"majicbot:details:{source_id}", user_id=STRANGER
            )
            shown = await emulator.wait_for_call(answer_to(details))
            assert isinstance(shown.payload, dict)
            description = shown.payload["embeds"][0]["description"]
            assert "Prompt: a quiet harbour" in description
            # The hint names the command that draws this very job again (not /reroll, which re-runs the
            # clicker's own last job): typed by the stranger, it queues the same request.
            (again,) = [
                line for line in description.splitlines() if line.startswith("The same picture again: ")
            ]
            typed = await emulator.inject_slash(
                "imagine",
                {"prompt": again.removeprefix("The same picture again: ").removeprefix("/imagine ")},
                user_id=STRANGER,
            )
            assert "Job #" in content(await emulator.wait_for_call(answer_to(typed)))
            copy = max(await app.queue.queued_in_fair_order(), key=lambda job: job.id)
            assert copy.requester.user_id == str(STRANGER) and copy.parent_id is None
            assert copy.request == (await app.queue.get(source_id)).request
            await app.queue.cancel(copy.id)

            refused = await emulator.inject_click(
                message_id, f"majicbot:delete:{source_id}", user_id=STRANGER
            )
            assert "only" in content(await emulator.wait_for_call(answer_to(refused))).lower()
            assert message_id in emulator.messages

            deleted = await emulator.inject_click(message_id, f"majicbot:delete:{source_id}", user_id=OWNER)
            assert "Deleted" in content(await emulator.wait_for_call(answer_to(deleted)))
            assert message_id not in emulator.messages
            for click in [*clicks, details, refused, deleted]:
                ack = await emulator.wait_for_call(callback_of(click))
                assert ack.payload == {"type": 5, "data": {"flags": 64}}
                assert ack.arrived - click.sent < 3.0

        # The reroll queued from the button is drawn once the engine runs again.
        async with running(config):
            rerolled = await emulator.wait_for_call(
                lambda c: channel_post()(c) and f"majicbot:reroll:{reroll.id}" in button_ids(c), within=60
            )
            assert rerolled.files[0].filename == f"majicbot-{reroll.id}-{reroll.request.seed}.png"


async def test_a_rate_limited_post_is_waited_out(tmp_path: Path) -> None:
    async with emulated() as emulator, running(make_config(tmp_path, emulator)):
        emulator.rate_limit_next("POST /channels/{channel}/messages", 2, retry_after=0.3)
        await imagine(emulator, "a red kite --ar 1:1")
        posted = await emulator.wait_for_call(channel_post(), within=60)
        limited = [
            c for c in emulator.calls if c.route == "POST /channels/{channel}/messages" and c.status == 429
        ]
        assert len(limited) == 2
        assert posted.arrived - limited[-1].arrived >= 0.25  # discord.py waited retry_after
        assert len(posted.files) == 1


async def test_a_dm_is_answered_in_the_dm(tmp_path: Path) -> None:
    async with emulated() as emulator, running(make_config(tmp_path, emulator)):
        await imagine(emulator, "a paper boat --ar 3:2", guild_id=None, channel_id=55)
        posted = await emulator.wait_for_call(channel_post(55), within=60)
        assert posted.files[0].filename.endswith(".png")


async def test_a_burst_from_five_users_is_served_fairly_and_completely(tmp_path: Path) -> None:
    users = [100 + n for n in range(5)]
    async with emulated() as emulator, running(make_config(tmp_path, emulator)) as app:
        injected = [
            await emulator.inject_slash("imagine", {"prompt": f"tile {n} by {user} --steps 1"}, user_id=user)
            for n in range(6)
            for user in users
        ]
        for interaction in injected:
            ack = await emulator.wait_for_call(callback_of(interaction), within=10)
            assert ack.arrived - interaction.sent < 3.0
        posts = await emulator.wait_for_calls(channel_post(), 30, within=120)
        jobs = [await app.queue.get(n) for n in range(1, 31)]

    assert len(posts) == 30
    assert {job.status for job in jobs} == {JobStatus.DONE}
    assert all(job.delivered_at is not None for job in jobs)
    assert Counter(job.requester.user_id for job in jobs) == {str(user): 6 for user in users}
    # Fair order: at every point, no user has had more than one job more started than anyone else
    # (one extra for the job that started before the burst was all queued).
    started = sorted(jobs, key=lambda job: (job.started_at, job.id))
    counts = Counter[str]()
    for job in started:
        counts[job.requester.user_id] += 1
        assert max(counts.values()) - min(counts[str(user)] for user in users) <= 2, counts


async def test_a_png_over_the_upload_limit_is_sent_as_a_jpeg_and_says_so(tmp_path: Path) -> None:
    limit = 5000  # bytes; the tiny backend's 256x256 PNG is larger, its JPEG smaller
    async with emulated() as emulator, running(make_config(tmp_path, emulator)) as app:
        interaction = await emulator.inject_slash(
            "imagine",
            {"prompt": "static --ar 1:1 --seed 3"},
            user_id=OWNER,
            channel_id=66,
            upload_limit=limit,
        )
        await emulator.wait_for_call(callback_of(interaction))
        posted = await emulator.wait_for_call(channel_post(66), within=60)
        job = await app.queue.get(1)
        png = await app.images.read(job.result_path or "")

    assert len(png) > limit
    (upload,) = posted.files
    assert upload.filename == f"majicbot-{job.id}-3.jpg"
    assert len(upload.data) <= limit and upload.data[:2] == b"\xff\xd8"
    assert isinstance(posted.payload, dict)
    assert "high-quality JPEG" in posted.payload["embeds"][0]["footer"]["text"]


async def test_a_failed_job_says_why_and_offers_a_retry_with_the_same_seed(tmp_path: Path) -> None:
    async with emulated() as emulator, running(make_config(tmp_path, emulator)) as app:
        interaction = await imagine(emulator, "a [boom] volcano --ar 1:1 --seed 5")
        failed = await emulator.wait_for_call(
            lambda c: answer_to(interaction)(c) and "failed" in content(c), within=60
        )
        assert "something went wrong while drawing it" in content(failed)
        assert button_ids(failed) == ["majicbot:retry:1"]
        assert (await app.queue.get(1)).status is JobStatus.FAILED

        # The button sits on the ephemeral status message: the click carries that message.
        original = emulator.original_response(interaction)
        assert original is not None
        emulator.messages[original["id"]] = original
        retry = await emulator.inject_click(original["id"], "majicbot:retry:1", user_id=OWNER)
        assert "Job #2" in content(
            await emulator.wait_for_call(lambda c: answer_to(retry)(c) and "#2" in content(c))
        )
        again = await app.queue.get(2)
        assert again.parent_id == 1 and again.request.seed == 5


async def test_after_the_interaction_token_dies_only_the_channel_post_remains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presenter, "TOKEN_LIFETIME_S", 0.0)  # as if the queue had taken 15 minutes
    async with emulated() as emulator, running(make_config(tmp_path, emulator)):
        interaction = await imagine(emulator, "a long queue --ar 1:1")
        await emulator.wait_for_call(channel_post(), within=60)
        # A failure has no status line to show it either: it is said in the channel, with the button.
        failing = await imagine(emulator, "a [boom] long queue --ar 1:1")
        notice = await emulator.wait_for_call(
            lambda c: channel_post()(c) and "failed" in content(c), within=60
        )
    assert emulator.calls_matching(answer_to(interaction)) == []
    assert emulator.calls_matching(answer_to(failing)) == []
    assert content(notice).startswith("someone: Job #2 failed")
    assert button_ids(notice) == ["majicbot:retry:2"]


async def test_progress_edits_go_on_after_a_restart_of_the_chat_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interaction token lives in the job row: a new chat process keeps editing the status line."""
    monkeypatch.setenv("TINY_BACKEND_STEP_S", "0.6")
    async with emulated() as emulator:
        config = make_config(tmp_path, emulator, progress_edit_interval_s=1.0)
        async with running(config, with_engine=False):
            interaction = await imagine(emulator, "a [slow] windmill --steps 5 --seed 3 --ar 1:1")
            first = await emulator.wait_for_call(answer_to(interaction), within=10)
            assert "queued" in content(first)
        before = len(emulator.calls_matching(answer_to(interaction)))

        async with running(config):  # a new process: nothing of the first one's memory survives
            await emulator.wait_for_call(channel_post(), within=60)
            await emulator.wait_for_call(lambda c: answer_to(interaction)(c) and "posted" in content(c))
        later = [content(call) for call in emulator.calls_matching(answer_to(interaction))[before:]]
    assert any("step" in text for text in later), later
    assert "posted in this channel" in later[-1]
