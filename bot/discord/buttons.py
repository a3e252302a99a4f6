"""Persistent buttons and selects: `bot.job_view.ButtonSpec`s and `/settings` options as discord.py
components.

The custom_id is ``majicbot:`` + the press's key (``majicbot:reroll:42``; a settings select
``majicbot:set:ar``, the chosen value arriving with the click); one `DynamicItem` class per kind,
registered at startup, matches them all, so a click on a message posted before a restart still works.
Each passes the entrance (`bot.discord.client.entrance_of`) in its `interaction_check` and hands its
press to it in its `callback`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from bot.discord.client import entrance_of
from bot.job_view import ButtonAction, ButtonPress, ButtonSpec, ButtonStyle, button, button_rows
from bot.settings_menu import SettingPress
from bot.user_settings import SettingName, SettingOption, SettingsView

_STYLES = {
    ButtonStyle.PRIMARY: discord.ButtonStyle.primary,
    ButtonStyle.SECONDARY: discord.ButtonStyle.secondary,
    ButtonStyle.DANGER: discord.ButtonStyle.danger,
}
# Longest first: "vary" must not match the start of "varystrong".
_ACTIONS = "|".join(sorted((action.value for action in ButtonAction), key=len, reverse=True))
PER_ROW = 5
MAX_ROWS = 5


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=re.compile(rf"majicbot:(?P<key>(?:{_ACTIONS}):[0-9]{{1,20}}(?::[1-9])?)"),
):
    def __init__(self, spec: ButtonSpec, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=spec.label,
                emoji=spec.emoji,
                style=_STYLES[spec.style],
                custom_id=f"majicbot:{spec.press.key}",
                row=row,
            )
        )
        self.press = spec.press

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        press = ButtonPress.parse(match["key"])
        if press is None:  # e.g. an image number on an action that has none: never made by this bot
            raise ValueError(f"not a button of this bot: {match['key']}")
        return cls(button(press.action, press.job_id, image=press.image))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await entrance_of(interaction).admit(interaction)

    async def callback(self, interaction: discord.Interaction) -> None:
        await entrance_of(interaction).press(interaction, self.press)


class SettingSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=re.compile(r"majicbot:set:(?P<name>{})".format("|".join(SettingName))),
):
    """A select menu for one setting (at most 25 choices, as `SettingOption` promises)."""

    def __init__(self, option: SettingOption) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=f"majicbot:set:{option.name}",
                placeholder=f"{option.label}: {option.current}"[:150],
                options=[
                    discord.SelectOption(label=choice, value=choice, default=choice == option.current)
                    for choice in option.choices[:25]
                ],
            )
        )
        self.name = option.name

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> SettingSelect:
        # Only the name matters: the chosen value comes with the click and the service checks it.
        choices = tuple(o.value for o in item.options) if isinstance(item, discord.ui.Select) else ()
        return cls(SettingOption(SettingName(match["name"]), "", "", choices))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await entrance_of(interaction).admit(interaction, in_place=True)

    async def callback(self, interaction: discord.Interaction) -> None:
        values = self.item.values  # the value picked comes with the click
        if values:
            await entrance_of(interaction).press(interaction, SettingPress(self.name, values[0]))


def settings_components(view: SettingsView) -> discord.ui.View:
    """A select per setting that has choices (aspect ratio, steps, images, progress)."""
    selects = discord.ui.View(timeout=None)
    for option in view.options:
        if option.choices:
            selects.add_item(SettingSelect(option))
    return selects


def components(buttons: Sequence[ButtonSpec]) -> discord.ui.View:
    """A persistent view holding `buttons` in their rows (five to a row and five rows, as Discord
    allows; buttons past the fifth row are left out)."""
    view = discord.ui.View(timeout=None)
    for row, specs in enumerate(button_rows(buttons, PER_ROW)[:MAX_ROWS]):
        for spec in specs:
            view.add_item(JobButton(spec, row))
    return view
