"""`bot.command_table` is the one source of the commands: Discord's slash commands, Telegram's menu and
/help (as options and as typed text) are all made from it, so an option added there appears everywhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import pytest
from discord import app_commands

from bot import texts
from bot.command_parser import FLAGS
from bot.command_table import COMMAND_TABLE, CommandSpec, OptionKind, OptionSpec, OptionValues, usage
from bot.discord.commands import build_commands
from bot.settings import LimitsSettings
from bot.telegram.handlers import COMMANDS
from tests.support.app_harness import running
from tests.support.discord_harness import answer_to, content, emulated, make_config

# Discord's option types (https://discord.com/developers/docs/interactions/application-commands).
DISCORD_TYPES = {
    OptionKind.TEXT: 3,
    OptionKind.INTEGER: 4,
    OptionKind.BOOLEAN: 5,
    OptionKind.NUMBER: 10,
    OptionKind.IMAGE: 11,
}


def discord_payload(limits: LimitsSettings) -> dict[str, dict[str, Any]]:
    """The commands as discord.py would sync them, by name."""
    handlers = SimpleNamespace(commands=SimpleNamespace(limits=limits))
    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))
    return {c.name: c.to_dict(tree) for c in build_commands(handlers)}  # type: ignore[arg-type]


def with_option_on_queue(option: OptionSpec) -> tuple[CommandSpec, ...]:
    return tuple(
        dataclasses.replace(c, options=(*c.options, option)) if c.name == "queue" else c
        for c in COMMAND_TABLE
    )


def test_discord_registers_every_command_of_the_table_as_written_there() -> None:
    limits = LimitsSettings(max_images=3)
    payload = discord_payload(limits)
    assert list(payload) == [spec.name for spec in COMMAND_TABLE]
    for spec in COMMAND_TABLE:
        command = payload[spec.name]
        assert command["description"] == spec.description
        registered = command.get("options", [])
        assert [o["name"] for o in registered] == [o.name for o in spec.options]
        for option, declared in zip(registered, spec.options, strict=True):
            assert option["type"] == DISCORD_TYPES[declared.kind], option
            assert option["description"] == declared.description
            assert option["required"] == declared.required
            assert option.get("min_value") == declared.min_value
            assert option.get("max_value") == declared.max_value
            choices = [choice["value"] for choice in option.get("choices", [])]
            assert choices == list(declared.choices_for(limits))
    imagine = {o["name"]: o for o in payload["imagine"]["options"]}
    assert [c["value"] for c in imagine["n"]["choices"]] == [1, 2, 3]  # from the operator's limits
    assert [c["value"] for c in imagine["aspect"]["choices"]][:2] == ["1:1", "16:9"]


def test_telegram_menu_is_the_table_without_the_operators_commands() -> None:
    menu = [(c.command, c.description) for c in COMMANDS]
    assert menu == [(c.name, c.description) for c in COMMAND_TABLE if not c.operators_only]
    assert {"ban", "unban", "bans"}.isdisjoint(name for name, _ in menu)


def test_help_names_every_command_with_its_usage_both_ways() -> None:
    for typed in (False, True):
        text = texts.help_text(LimitsSettings(), typed=typed)
        for spec in COMMAND_TABLE:
            assert f"{usage(spec, typed=typed)}: {spec.description}" in text
    options = texts.help_text(LimitsSettings())
    assert "/imagine <prompt> [seed] [steps] [aspect] [negative] [n] [image] [strength]: " in options
    written = texts.help_text(LimitsSettings(), typed=True)
    assert "/imagine <prompt> [--flags]: " in written and "/reroll [seed] [job]: " in written
    assert "/show <job>: " in written and "/ban <user> [reason]: " in written


def test_a_new_option_in_the_table_appears_on_both_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    table = with_option_on_queue(OptionSpec("mine", OptionKind.BOOLEAN, "Only my own jobs"))
    monkeypatch.setattr("bot.discord.commands.COMMAND_TABLE", table)
    monkeypatch.setattr("bot.texts.COMMAND_TABLE", table)
    (option,) = discord_payload(LimitsSettings())["queue"]["options"]
    assert option == {
        "name": "mine",
        "description": "Only my own jobs",
        "type": 5,
        "required": False,
    }
    assert "/queue [mine]: " in texts.help_text(LimitsSettings())  # Discord's /help
    assert "/queue [mine]: " in texts.help_text(LimitsSettings(), typed=True)  # Telegram's


async def test_a_new_option_reaches_the_command_on_discord_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = with_option_on_queue(OptionSpec("mine", OptionKind.BOOLEAN, "Only my own jobs"))
    monkeypatch.setattr("bot.discord.commands.COMMAND_TABLE", table)
    monkeypatch.setattr("bot.texts.COMMAND_TABLE", table)
    async with emulated() as emulator, running(make_config(tmp_path, emulator), with_engine=False):
        synced = next(c for c in emulator.calls if c.route.endswith("/commands"))
        assert isinstance(synced.payload, list)
        (queue,) = [c for c in synced.payload if c["name"] == "queue"]
        assert [o["name"] for o in queue["options"]] == ["mine"]
        interaction = await emulator.inject_slash("queue", {"mine": True}, user_id=7)
        assert "Nothing is running" in content(await emulator.wait_for_call(answer_to(interaction)))
        interaction = await emulator.inject_slash("help", None, user_id=7)
        assert "/queue [mine]: " in content(await emulator.wait_for_call(answer_to(interaction)))


def test_the_table_keeps_the_platforms_rules() -> None:
    flags = {flag.name for flag in FLAGS}
    for spec in COMMAND_TABLE:
        assert spec.name.islower() and len(spec.name) <= 32 and 0 < len(spec.description) <= 100
        required = [option.required for option in spec.options]
        assert required == sorted(required, reverse=True), f"/{spec.name}: required options come first"
        for option in spec.options:
            assert 0 < len(option.description) <= 100, option.name
            assert len(option.choices_for(LimitsSettings(max_images=4))) <= 25, option.name
            assert option.flag is None or option.flag in flags, option.flag
            assert option.choices is None or option.kind in (OptionKind.TEXT, OptionKind.INTEGER)


def test_option_values_are_read_by_their_kind() -> None:
    values = OptionValues({"seed": 42, "prompt": "a fox", "reset": True, "strength": 1, "flag": True})
    assert values.integer("seed") == 42 and values.text("prompt") == "a fox"
    assert values.boolean("reset") and not values.boolean("missing")
    assert values.number("strength") == 1.0 and values.integer("missing") is None
    with pytest.raises(TypeError, match="wrong type"):
        values.integer("flag")  # True is an int to Python, never a job id
    with pytest.raises(TypeError, match="wrong type"):
        values.text("seed")
    with pytest.raises(TypeError, match="wrong type"):
        values.image("prompt")
