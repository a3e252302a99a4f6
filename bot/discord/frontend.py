"""The Discord adapter as `bot/app.py` sees it: log in, sync commands, hold the gateway, stop cleanly."""

from __future__ import annotations

import logging

import aiohttp
import discord
import yarl
from discord.errors import ConnectionClosed
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.access import AccessPolicy
from bot.chat_commands import ChatCommands
from bot.discord.buttons import JobButton, SettingSelect
from bot.discord.client import MajicClient
from bot.discord.commands import DiscordHandlers, build_commands, on_tree_error
from bot.discord.presenter import DiscordPresenter
from bot.discord.settings import DiscordSettings
from bot.frontend import ChatFrontend, FrontendStartError
from bot.service import BotService
from bot.settings import LimitsSettings

log = logging.getLogger(__name__)

# discord.py's own endpoints, restored when the configuration names none.
DISCORD_API_BASE = Route.BASE
DISCORD_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY
READY_TIMEOUT_S = 60.0
_TOKEN_LEAKING_LOGGERS = ("discord", "aiohttp", "bot.discord")
BOT_SCOPES = ("bot", "applications.commands")
# What posting an image with buttons and a progress message needs, in channels and threads.
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)


class DiscordFrontend(ChatFrontend[DiscordPresenter]):
    """Implements `bot.frontend.Frontend` with discord.py."""

    name = "discord"

    def __init__(self, settings: DiscordSettings, service: BotService, limits: LimitsSettings) -> None:
        if settings.token is None:
            raise ValueError("DiscordFrontend needs discord.token (or MAJICBOT_DISCORD_TOKEN)")
        # discord.py logs request URLs and gateway payloads (interaction tokens in both) at DEBUG.
        super().__init__([settings.token.get_secret_value()], _TOKEN_LEAKING_LOGGERS)
        self._settings = settings
        self._client = MajicClient(on_setup=self._setup)
        self._presenter = DiscordPresenter(
            self._client,
            service,
            edit_interval_s=settings.progress_edit_interval_s,
            token_key=settings.token.get_secret_value(),
            on_token_refused=self._token_refused,
        )
        policy = AccessPolicy(
            admin_user_ids=frozenset(settings.admin_user_ids),
            allowed_chat_ids=frozenset(settings.allowed_channel_ids),
            allowed_guild_ids=frozenset(settings.allowed_guild_ids),
            allowed_role_ids=frozenset(settings.allowed_role_ids),
            allow_private=settings.allow_dms,
        )
        self._handlers = DiscordHandlers(
            ChatCommands(service, limits), policy, self._presenter, self._answers
        )
        self._client.entrance = self._handlers

    async def _connect(self) -> None:
        """Log in, sync the slash commands, connect to the gateway; return once READY."""
        assert self._settings.token is not None
        # discord.py reads its endpoints from class attributes: they apply to the whole process.
        Route.BASE = self._settings.api_base_url or DISCORD_API_BASE
        gateway = self._settings.gateway_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway) if gateway else DISCORD_GATEWAY
        try:
            await self._client.login(self._settings.token.get_secret_value())
        except discord.LoginFailure:
            await self._client.close()
            raise FrontendStartError(
                "Discord rejected the bot token (401 Unauthorized). "
                "Check discord.token or MAJICBOT_DISCORD_TOKEN."
            ) from None
        except (discord.HTTPException, aiohttp.ClientError, OSError) as error:
            await self._client.close()
            raise FrontendStartError(
                f"Could not log in to Discord at {Route.BASE} ({type(error).__name__}: {error}). "
                "Check the network, or discord.api_base_url if you use a proxy."
            ) from None
        self._start_receiver(self._client.connect(), name="discord-gateway")
        problem = await self._until_ready(self._client.wait_until_ready(), READY_TIMEOUT_S)
        if problem is not None:
            await self.stop()
            if self._fatal.is_set():  # e.g. the gateway refused the token (4004): say that
                raise FrontendStartError(self._fatal.reason)
            raise FrontendStartError(
                f"Discord's gateway did not become ready ({problem}). "
                "Check the network, or discord.gateway_url if you use a proxy."
            )
        user = self._client.user
        log.info("discord: connected as %s (id %s)", user, None if user is None else user.id)
        application_id = self._client.application_id
        if application_id is not None:
            log.info("discord: invite the bot to a server with %s", invite_url(application_id))

    async def _disconnect(self) -> None:
        await self._client.close()  # the gateway task then ends; `ChatFrontend.stop` waits for it

    def _token_refused(self) -> None:
        self._fatal.set(
            "Discord refused the bot token (401 Unauthorized) when posting: it was revoked or reset. "
            "Set the new token in discord.token or MAJICBOT_DISCORD_TOKEN, then restart."
        )

    def _ended_reason(self, error: BaseException | None) -> str:
        # discord.py reconnects by itself after network trouble; the gateway task ends only on errors
        # that need a person (a token revoked while running, intents refused).
        if isinstance(error, ConnectionClosed) and error.code == 4004:
            return (
                "Discord closed the gateway: authentication failed (4004), the bot token was revoked or "
                "reset. Set the new token in discord.token or MAJICBOT_DISCORD_TOKEN, then restart."
            )
        if isinstance(error, discord.LoginFailure):
            return (
                "Discord rejected the bot token. Check discord.token or MAJICBOT_DISCORD_TOKEN, then restart."
            )
        if error is None:
            return "the Discord gateway connection ended; restart majicbot."
        return (
            f"the Discord gateway connection ended ({type(error).__name__}: {error}); "
            "check the token and network, then restart majicbot."
        )

    @property
    def is_running(self) -> bool:
        return self._receiving and self._client.is_ready()

    async def _setup(self, client: MajicClient) -> None:
        """Runs inside login, before the gateway: register buttons and commands, then sync commands."""
        client.add_dynamic_items(JobButton, SettingSelect)
        tree = client.tree
        for command in build_commands(self._handlers):
            tree.add_command(command)
        tree.error(on_tree_error)
        if self._settings.sync_guild_ids:
            for guild_id in self._settings.sync_guild_ids:
                guild = discord.Object(id=guild_id)
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
                log.info("discord: synced %d commands to guild %s", len(synced), guild_id)
        else:
            synced = await tree.sync()
            log.info("discord: synced %d commands globally", len(synced))


def invite_url(application_id: int) -> str:
    """The OAuth2 URL that adds the bot to a server with the scopes and permissions it needs."""
    return discord.utils.oauth_url(application_id, permissions=BOT_PERMISSIONS, scopes=BOT_SCOPES)
