"""The `[discord]` section (pydantic only: read by the config without loading discord.py)."""

from __future__ import annotations

from pydantic import Field

from bot.settings import PlatformSettings


class DiscordSettings(PlatformSettings):
    """The adapter runs when a token is set (here or MAJICBOT_DISCORD_TOKEN)."""

    sync_guild_ids: tuple[int, ...] = Field(
        default=(), description="Sync slash commands to these guilds (instant); empty: globally."
    )
    allowed_guild_ids: tuple[int, ...] = ()
    allowed_channel_ids: tuple[int, ...] = ()
    allowed_role_ids: tuple[int, ...] = ()
    admin_user_ids: tuple[int, ...] = ()
    allow_dms: bool = True
    progress_edit_interval_s: float = Field(default=2.0, ge=1.0)
    api_base_url: str | None = Field(default=None, description="REST base, e.g. http://proxy/api/v10")
    gateway_url: str | None = Field(default=None, description="Gateway websocket URL, e.g. ws://proxy/")

    def operator_ids(self) -> frozenset[str]:
        return frozenset(str(user) for user in self.admin_user_ids)
