"""The discord.py client: no privileged intents, no pings, and one entrance for every interaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import discord
from discord import app_commands

if TYPE_CHECKING:
    from bot.job_view import ButtonPress
    from bot.settings_menu import SettingPress


class Entrance(Protocol):
    """Where every command and button press comes in."""

    async def admit(self, interaction: discord.Interaction, *, in_place: bool = False) -> bool:
        """Acknowledge the interaction and check access, once; False (having answered) to refuse.
        `in_place`: the answer replaces the message the component is on (a settings select)."""
        ...

    async def press(self, interaction: discord.Interaction, press: ButtonPress | SettingPress) -> None: ...


class _Tree(app_commands.CommandTree["MajicClient"]):
    async def interaction_check(self, interaction: discord.Interaction[MajicClient], /) -> bool:
        if interaction.command is None:
            return True  # a command this bot does not have: the tree's error handler says so at once
        return await entrance_of(interaction).admit(interaction)


class MajicClient(discord.Client):
    """A plain Client with a command tree; commands and buttons reach `entrance` through it."""

    entrance: Entrance  # set by the frontend before it logs in

    def __init__(self, on_setup: Callable[[MajicClient], Awaitable[None]]) -> None:
        # Interactions need no gateway intents; without the guilds intent nothing is cached or chunked,
        # and no GUILD_CREATE follows READY, so waiting for one (2 s by default) only delays startup.
        super().__init__(
            intents=discord.Intents.none(),
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=0.0,
        )
        self.tree: app_commands.CommandTree[MajicClient] = _Tree(self)
        self._on_setup = on_setup

    async def setup_hook(self) -> None:
        await self._on_setup(self)


def entrance_of(interaction: discord.Interaction) -> Entrance:
    """Where an interaction comes in: the entrance of the client it reached."""
    client = interaction.client
    assert isinstance(client, MajicClient), "majicbot's commands and components live on MajicClient"
    return client.entrance
