"""Discord commands that need no engine: bad input, access rules, start-up errors, the 3-second ack.

The real discord.py client runs inside the real application against the emulator; jobs stay queued
(no engine), which is what quota and /queue need.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

from bot.app import Application
from bot.command_parser import FLAGS
from bot.frontend import FrontendStartError
from tests.support.app_harness import running
from tests.support.discord_emulator import DiscordEmulator, Injected
from tests.support.discord_harness import (
    CHANNEL,
    GUILD,
    TOKEN,
    answer_to,
    callback_of,
    content,
    emulated,
    make_config,
)

ACK_WINDOW_S = 3.0
ME = 4242


async def ask(
    emulator: DiscordEmulator, name: str, options: Mapping[str, str | int] | None = None, **where: int | None
) -> str:
    """Run a slash command; check it was deferred ephemerally within 3 s; return the answer's text."""
    interaction = await emulator.inject_slash(name, options, user_id=ME, **where)  # type: ignore[arg-type]
    await assert_deferred_in_time(emulator, interaction)
    answer = await emulator.wait_for_call(answer_to(interaction))
    assert answer.status == 200
    assert isinstance(answer.payload, dict)
    assert answer.payload["allowed_mentions"] == {"parse": []}
    return content(answer)


async def assert_deferred_in_time(emulator: DiscordEmulator, interaction: Injected) -> None:
    ack = await emulator.wait_for_call(callback_of(interaction), within=ACK_WINDOW_S + 2)
    waited = ack.arrived - interaction.sent
    assert waited < ACK_WINDOW_S, f"acknowledged after {waited:.2f} s: Discord would have dropped it"
    assert ack.payload == {"type": 5, "data": {"flags": 64}}  # deferred, ephemeral
    assert ack.status == 200


BAD_IMAGINE_INPUT: list[tuple[dict[str, str | int], str]] = [
    ({"prompt": "a cat --colour red"}, "--colour is not a flag I know"),
    ({"prompt": "a cat --seed 99999999999"}, "seed"),
    ({"prompt": "a cat --seed many"}, "seed"),
    ({"prompt": "a cat", "seed": -5}, "seed"),
    ({"prompt": "a cat --steps 50"}, "steps"),
    ({"prompt": "a cat", "steps": 50}, "steps"),
    ({"prompt": "a cat --ar 5:4"}, "5:4"),
    ({"prompt": "a cat --size 100000x64"}, "size"),
    ({"prompt": "--seed 4"}, "prompt is empty"),
    ({"prompt": "a cat " * 50}, "limit is 200"),
    ({"prompt": "a cat --no dogs", "negative": "birds"}, "disagree"),
    ({"prompt": "a cat --ar 1:1", "aspect": "16:9"}, "disagree"),
]


async def test_bad_imagine_input_gets_an_ephemeral_explanation(tmp_path: Path) -> None:
    async with emulated() as emulator, running(make_config(tmp_path, emulator), with_engine=False) as app:
        for options, expected in BAD_IMAGINE_INPUT:
            text = await ask(emulator, "imagine", options)
            assert expected.lower() in text.lower(), f"{options}: {text}"
        assert await app.queue.queued_in_fair_order() == []  # nothing was queued


async def test_other_commands_explain_what_is_missing(tmp_path: Path) -> None:
    async with emulated() as emulator, running(make_config(tmp_path, emulator), with_engine=False) as app:
        assert "Nothing to reroll here yet" in await ask(emulator, "reroll")
        assert "no job #987" in await ask(emulator, "reroll", {"job": 987})
        assert "no queued or running job" in await ask(emulator, "cancel")
        assert "no job #987" in await ask(emulator, "cancel", {"job": 987})
        # Discord's client checks option ranges, but nothing stops a raw request: still the range message.
        assert "out of range" in await ask(emulator, "cancel", {"job": 99999999999999999999})
        assert "out of range" in await ask(emulator, "show", {"job": 99999999999999999999})
        assert "out of range" in await ask(emulator, "reroll", {"job": 99999999999999999999})
        assert "no pictures yet" in await ask(emulator, "history")
        assert "Nothing is running" in await ask(emulator, "queue")
        assert await app.queue.queued_in_fair_order() == []


async def test_quota_queue_history_and_cancel(tmp_path: Path) -> None:
    async with emulated() as emulator, running(make_config(tmp_path, emulator), with_engine=False) as app:
        for n in range(6):
            text = await ask(emulator, "imagine", {"prompt": f"a cat number {n} --ar 16:9 --seed {n}"})
            assert f"position {n + 1}" in text, text
        refused = await ask(emulator, "imagine", {"prompt": "one too many"})
        assert "the limit is 6" in refused
        queued = await app.queue.queued_in_fair_order()
        assert len(queued) == 6
        assert {(job.request.width, job.request.height) for job in queued} == {(256, 144)}
        assert "Waiting: 6 jobs" in await ask(emulator, "queue")
        assert "a cat number 5" in await ask(emulator, "history")
        cancelled = await ask(emulator, "cancel")
        assert f"#{queued[-1].id}" in cancelled
        assert len(await app.queue.queued_in_fair_order()) == 5


async def test_allowlists_and_dms(tmp_path: Path) -> None:
    async with emulated() as emulator:
        config = make_config(
            tmp_path,
            emulator,
            allowed_guild_ids=(GUILD,),
            allowed_channel_ids=(CHANNEL,),
            allowed_role_ids=(77,),
            admin_user_ids=(1,),
            allow_dms=False,
        )
        async with running(config, with_engine=False) as app:
            prompt = {"prompt": "a cat"}
            assert "server" in await ask(emulator, "imagine", prompt, guild_id=999)
            assert "channel" in await ask(emulator, "imagine", prompt, channel_id=31)
            assert "role" in await ask(emulator, "imagine", prompt)
            assert "direct messages" in await ask(emulator, "imagine", prompt, guild_id=None, channel_id=5)
            assert await app.queue.queued_in_fair_order() == []
            interaction = await emulator.inject_slash("imagine", prompt, user_id=ME, role_ids=(77,))
            assert "position 1" in content(await emulator.wait_for_call(answer_to(interaction)))
            interaction = await emulator.inject_slash(
                "imagine", prompt, user_id=1, guild_id=None, channel_id=5
            )
            assert "position 2" in content(await emulator.wait_for_call(answer_to(interaction)))


async def test_an_unknown_command_gets_an_ephemeral_reply(tmp_path: Path) -> None:
    async with emulated() as emulator, running(make_config(tmp_path, emulator), with_engine=False):
        interaction = await emulator.inject_slash("paint", {"prompt": "a cat"}, user_id=ME)
        reply = await emulator.wait_for_call(callback_of(interaction))
        assert isinstance(reply.payload, dict)
        assert reply.payload["type"] == 4  # answered at once, ephemeral
        assert reply.payload["data"]["flags"] == 64
        assert "don't know that command" in reply.payload["data"]["content"]


async def test_a_wrong_token_is_a_clear_start_error_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with emulated() as emulator:
        config = make_config(tmp_path, emulator)  # with TOKEN, which Discord no longer accepts:
        emulator.token = "the-token-discord-knows"
        app = Application(config, with_engine=False, shutdown_timeout_s=5)
        with pytest.raises(
            FrontendStartError, match=r"Discord rejected the bot token.*MAJICBOT_DISCORD_TOKEN"
        ):
            async with asyncio.timeout(30):
                await app.run(asyncio.Event())
        assert [call.status for call in emulator.calls] == [401]
    assert caplog.records
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


async def test_commands_sync_to_the_configured_guilds(tmp_path: Path) -> None:
    async with emulated() as emulator:
        config = make_config(tmp_path, emulator, sync_guild_ids=(GUILD, 501))
        async with running(config, with_engine=False):
            synced = [c for c in emulator.calls if c.route.endswith("/commands")]
            assert [c.route for c in synced] == ["PUT /applications/{app}/guilds/{guild}/commands"] * 2
            assert [c.params["guild"] for c in synced] == [str(GUILD), "501"]
            assert isinstance(synced[0].payload, list)
            assert {command["name"] for command in synced[0].payload} == {
                "imagine",
                "reroll",
                "history",
                "queue",
                "cancel",
                "show",
                "settings",
                "help",
                "ban",
                "unban",
                "bans",
            }
            assert "position 1" in await ask(emulator, "imagine", {"prompt": "a cat"})


async def test_help_lists_every_command_and_every_flag_the_parser_takes(tmp_path: Path) -> None:
    async with emulated() as emulator, running(make_config(tmp_path, emulator), with_engine=False):
        synced = next(c for c in emulator.calls if c.route.endswith("/commands"))
        assert isinstance(synced.payload, list)
        text = await ask(emulator, "help")
    for command in synced.payload:
        assert f"/{command['name']}" in text, command["name"]
        for option in command.get("options", []):
            assert option["name"] in text, (command["name"], option["name"])
    for flag in FLAGS:
        assert f"--{flag.name}" in text, flag.name
    assert "/reroll [seed] [job]" in text and "/show <job>" in text
    assert "Limits: prompts up to 200 characters" in text  # the test config's limit, not the default
