"""The discord.py client: no privileged intents, no pings, and a hook that wires commands and buttons."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import discord
from discord import app_commands


class ButtonActions(Protocol):
    """What the persistent buttons do; each gets the click and the job id from its custom_id."""

    async def reroll(self, interaction: discord.Interaction, job_id: int) -> None: ...

    async def retry(self, interaction: discord.Interaction, job_id: int) -> None: ...

    async def details(self, interaction: discord.Interaction, job_id: int) -> None: ...

    async def delete(self, interaction: discord.Interaction, job_id: int) -> None: ...


class MajicClient(discord.Client):
    """A plain Client with a command tree; buttons find their actions through `interaction.client`."""

    def __init__(self, on_setup: Callable[[MajicClient], Awaitable[None]]) -> None:
        # Interactions need no gateway intents; without the guilds intent nothing is cached or chunked,
        # and no GUILD_CREATE follows READY, so waiting for one (2 s by default) only delays startup.
        super().__init__(
            intents=discord.Intents.none(),
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=0.0,
        )
        self.actions: ButtonActions | None = None  # set by the frontend once its handlers exist
        self.tree: app_commands.CommandTree[MajicClient] = app_commands.CommandTree(self)
        self._on_setup = on_setup

    async def setup_hook(self) -> None:
        await self._on_setup(self)
