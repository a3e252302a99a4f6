"""Who may use the bot where, and as whom: one rule for every platform.

Each adapter checks it once, at its entrance (Discord: the command tree's and the buttons'
`interaction_check`; Telegram: one wrapper around every handler), through `bot.entrance.ChatEntrance`,
which also checks the ban list, and hands the service a `Caller`.
Empty allowlists mean everyone; admins pass every allowlist.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors import NotAllowed
from storage.jobs import Requester


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks (and where the answer goes), and whether they are one of the platform's admins."""

    requester: Requester
    is_admin: bool


@dataclass(frozen=True, slots=True)
class Place:
    """Where a command or button press came from, as far as access cares."""

    user_id: int
    chat_id: int
    # A direct message outside the servers' allowlists (Discord's DMs). Telegram's chat allowlist
    # lists private chats too, so Telegram passes False.
    private: bool
    guild_id: int | None = None
    role_ids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    admin_user_ids: frozenset[int] = frozenset()
    allowed_user_ids: frozenset[int] = frozenset()
    allowed_chat_ids: frozenset[int] = frozenset()
    allowed_guild_ids: frozenset[int] = frozenset()
    allowed_role_ids: frozenset[int] = frozenset()
    allow_private: bool = True

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admin_user_ids

    def check(self, place: Place) -> None:
        """Raise NotAllowed, worded for the user, when this place or user is not allowed."""
        if self.is_admin(place.user_id):
            return
        if self.allowed_user_ids and place.user_id not in self.allowed_user_ids:
            raise NotAllowed("Sorry, this bot is not available to you here.")
        if place.private:
            if not self.allow_private:
                raise NotAllowed("I don't take requests in direct messages here; use me in a server channel.")
            return
        if self.allowed_guild_ids and place.guild_id not in self.allowed_guild_ids:
            raise NotAllowed("I'm not enabled in this server. Ask the bot's operator to allow it.")
        if self.allowed_chat_ids and place.chat_id not in self.allowed_chat_ids:
            raise NotAllowed("I don't take requests in this channel; try one of the channels set up for me.")
        if self.allowed_role_ids and not place.role_ids & self.allowed_role_ids:
            raise NotAllowed("You need one of the roles allowed to use me; ask a moderator.")
