"""Who may use the bot where: the `[discord]` allowlists and admins, applied to an interaction."""

from __future__ import annotations

import discord

from bot.errors import NotAllowed
from bot.settings import DiscordSettings
from storage.jobs import Platform, Requester


class Access:
    """Allowlists of guilds, channels and roles (empty means everyone), admins, and DMs on or off."""

    def __init__(self, settings: DiscordSettings) -> None:
        self._settings = settings

    def is_admin(self, user_id: int) -> bool:
        return user_id in self._settings.admin_user_ids

    def check(self, interaction: discord.Interaction) -> None:
        """Raise NotAllowed, worded for the user, when this interaction's place or user is not allowed."""
        settings = self._settings
        if self.is_admin(interaction.user.id):
            return
        if interaction.guild_id is None:
            if not settings.allow_dms:
                raise NotAllowed("I don't take requests in direct messages here; use me in a server channel.")
            return
        if settings.allowed_guild_ids and interaction.guild_id not in settings.allowed_guild_ids:
            raise NotAllowed("I'm not enabled in this server. Ask the bot's operator to allow it.")
        if settings.allowed_channel_ids and interaction.channel_id not in settings.allowed_channel_ids:
            raise NotAllowed("I don't take requests in this channel; try one of the channels set up for me.")
        if settings.allowed_role_ids and not set(_role_ids(interaction)) & set(settings.allowed_role_ids):
            raise NotAllowed("You need one of the roles allowed to use me; ask a moderator.")

    def requester(self, interaction: discord.Interaction) -> Requester:
        """Who asked and where the answer goes (a DM's channel id is the DM itself)."""
        return Requester(
            platform=Platform.DISCORD,
            chat_id=str(interaction.channel_id),
            user_id=str(interaction.user.id),
            user_name=interaction.user.display_name,
            guild_id=None if interaction.guild_id is None else str(interaction.guild_id),
        )


def _role_ids(interaction: discord.Interaction) -> list[int]:
    user = interaction.user
    if not isinstance(user, discord.Member):
        return []
    # The bot runs without the guilds intent, so guild roles are not cached and Member.roles is empty;
    # the role ids from the interaction payload are kept in _roles regardless.
    return list(user._roles)
