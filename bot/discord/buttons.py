"""Persistent buttons: `bot.job_view.ButtonSpec`s as discord.py components.

The custom_id is ``majicbot:`` + the press's key (``majicbot:reroll:42``); one `DynamicItem` class,
registered at startup, matches them all, so a click on a message posted before a restart still works.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from bot.discord.client import MajicClient
from bot.job_view import ButtonAction, ButtonPress, ButtonSpec, ButtonStyle, button

_STYLES = {
    ButtonStyle.PRIMARY: discord.ButtonStyle.primary,
    ButtonStyle.SECONDARY: discord.ButtonStyle.secondary,
    ButtonStyle.DANGER: discord.ButtonStyle.danger,
}
_ACTIONS = "|".join(action.value for action in ButtonAction)


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=re.compile(rf"majicbot:(?P<key>(?:{_ACTIONS}):[0-9]{{1,20}})"),
):
    def __init__(self, spec: ButtonSpec) -> None:
        super().__init__(
            discord.ui.Button(
                label=spec.label,
                emoji=spec.emoji,
                style=_STYLES[spec.style],
                custom_id=f"majicbot:{spec.press.key}",
            )
        )
        self.press = spec.press

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        press = ButtonPress.parse(match["key"])
        assert press is not None, "the template admits only keys ButtonPress reads"
        return cls(button(press.action, press.job_id))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await _client(interaction).entrance.admit(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        await _client(interaction).entrance.press(interaction, self.press)


def components(buttons: Sequence[ButtonSpec]) -> discord.ui.View:
    """A persistent view holding `buttons` (five to a row, as Discord allows)."""
    view = discord.ui.View(timeout=None)
    for spec in buttons:
        view.add_item(JobButton(spec))
    return view


def _client(interaction: discord.Interaction) -> MajicClient:
    client = interaction.client
    assert isinstance(client, MajicClient), "JobButton is only registered on MajicClient"
    return client
