"""Persistent buttons under results: the action and job id live in the custom_id, the rest in the database.

One `DynamicItem` class, registered at startup, matches every ``majicbot:<action>:<job id>`` custom_id,
so a click on a message posted before a restart still reaches its action.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

import discord

from bot.discord.client import MajicClient


class Action(enum.StrEnum):
    REROLL = "reroll"
    RETRY = "retry"
    DETAILS = "details"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class _Look:
    label: str
    emoji: str | None
    style: discord.ButtonStyle


_LOOKS: dict[Action, _Look] = {
    Action.REROLL: _Look("Reroll", "🎲", discord.ButtonStyle.primary),
    Action.RETRY: _Look("Try again", "🔁", discord.ButtonStyle.primary),
    Action.DETAILS: _Look("Details", None, discord.ButtonStyle.secondary),
    Action.DELETE: _Look("Delete", "🗑️", discord.ButtonStyle.danger),
}


def custom_id(action: Action, job_id: int) -> str:
    """At most 100 characters: "majicbot:" + action + ":" + up to 20 digits."""
    return f"majicbot:{action.value}:{job_id}"


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=re.compile(r"majicbot:(?P<action>reroll|retry|details|delete):(?P<job>[0-9]{1,20})"),
):
    def __init__(self, action: Action, job_id: int) -> None:
        look = _LOOKS[action]
        super().__init__(
            discord.ui.Button(
                label=look.label, emoji=look.emoji, style=look.style, custom_id=custom_id(action, job_id)
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(Action(match["action"]), int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        assert isinstance(client, MajicClient), "JobButton is only registered on MajicClient"
        actions = client.actions
        assert actions is not None, "the frontend sets the actions before it logs in"
        handler = {
            Action.REROLL: actions.reroll,
            Action.RETRY: actions.retry,
            Action.DETAILS: actions.details,
            Action.DELETE: actions.delete,
        }[self.action]
        await handler(interaction, self.job_id)


def result_view(job_id: int) -> discord.ui.View:
    """Reroll, Details and Delete under a finished image."""
    view = discord.ui.View(timeout=None)
    for action in (Action.REROLL, Action.DETAILS, Action.DELETE):
        view.add_item(JobButton(action, job_id))
    return view


def retry_view(job_id: int) -> discord.ui.View:
    """Try again (same seed) under a failure notice."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(Action.RETRY, job_id))
    return view
