"""The slash commands and button presses: admitted once at the entrance, then one BotService call, rendered.

Every answer is ephemeral: the status line of a job, mistakes, /history and /queue are the asker's
business; the finished image is posted for everyone by the presenter.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot import texts
from bot.access import AccessPolicy, Caller, Place
from bot.command_parser import ASPECT_RATIOS, MAX_JOB_ID, MAX_SEED, read_imagine, with_options
from bot.discord.presenter import NO_MENTIONS, DiscordPresenter
from bot.errors import UserFacingError
from bot.job_view import ButtonAction, ButtonPress
from bot.service import BotService
from bot.settings import LimitsSettings
from bot.standing import Queued
from storage.jobs import Platform, Requester

log = logging.getLogger(__name__)

EXAMPLE = "/imagine prompt: a red fox in the snow --ar 16:9"
Work = Callable[[Caller], Awaitable[None]]


class DiscordHandlers:
    """The entrance (`bot.discord.client.Entrance`) and what each command and button does."""

    def __init__(
        self, service: BotService, policy: AccessPolicy, presenter: DiscordPresenter, limits: LimitsSettings
    ) -> None:
        self._service = service
        self._policy = policy
        self._presenter = presenter
        self.limits = limits
        self._in_flight: set[asyncio.Task[Any]] = set()

    async def admit(self, interaction: discord.Interaction) -> bool:
        # Deferring comes first, before anything that could take time: Discord forgets an interaction
        # that is not acknowledged within 3 seconds.
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as error:
            log.warning("interaction %s could not be acknowledged: %s", interaction.id, error)
            return False
        try:
            self._policy.check(_place(interaction))
        except UserFacingError as error:
            log.info("refused discord user %s in channel %s", interaction.user.id, interaction.channel_id)
            await reply(interaction, str(error))
            return False
        return True

    async def run(self, interaction: discord.Interaction, work: Work) -> None:
        """Do an admitted interaction's work; a mistake or failure becomes its answer."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        caller = Caller(_requester(interaction), self._policy.is_admin(interaction.user.id))
        try:
            await work(caller)
        except UserFacingError as error:
            await reply(interaction, str(error))
        except Exception as error:
            log.exception("interaction %s failed", interaction.id)
            await reply(interaction, texts.unexpected_error_text(error))
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def text(
        self, interaction: discord.Interaction, answer: Callable[[Caller], Awaitable[str]]
    ) -> None:
        async def work(caller: Caller) -> None:
            await reply(interaction, await answer(caller))

        await self.run(interaction, work)

    async def queued(
        self, interaction: discord.Interaction, enqueue: Callable[[Caller], Awaitable[Queued]]
    ) -> None:
        async def work(caller: Caller) -> None:
            queued = await enqueue(caller)
            # Queued whatever happens now: a failure to say so must never end in the generic "try
            # again" (that would queue a second job); the picture is posted when done either way.
            try:
                await self._presenter.open(interaction, queued)
            except Exception:
                log.exception("job=%s is queued, but its status line could not be shown", queued.job.id)

        await self.run(interaction, work)

    async def imagine(self, interaction: discord.Interaction, prompt: str, **options: Any) -> None:
        async def enqueue(caller: Caller) -> Queued:
            # Only read here: the service checks the merged arguments, once.
            args = with_options(read_imagine(prompt, self.limits), self.limits, **options)
            return await self._service.imagine(caller.requester, args, is_admin=caller.is_admin)

        await self.queued(interaction, enqueue)

    async def show(self, interaction: discord.Interaction, job_id: int) -> None:
        async def work(caller: Caller) -> None:
            job = await self._service.show(caller.requester, job_id, is_admin=caller.is_admin)
            await self._presenter.show_result(interaction, job)

        await self.run(interaction, work)

    async def press(self, interaction: discord.Interaction, press: ButtonPress) -> None:
        service, job_id = self._service, press.job_id
        if press.action is ButtonAction.REROLL:
            await self.queued(
                interaction,
                lambda c: service.reroll(c.requester, job_id=job_id, from_button=True, is_admin=c.is_admin),
            )
        elif press.action is ButtonAction.RETRY:
            await self.queued(interaction, lambda c: service.retry(c.requester, job_id, is_admin=c.is_admin))
        elif press.action is ButtonAction.DETAILS:
            await self.run(interaction, lambda c: self._details(interaction, c, job_id))
        elif press.action is ButtonAction.ORIGINAL:
            await self.run(interaction, lambda c: self._original(interaction, c, job_id))
        else:
            await self.run(interaction, lambda c: self._delete(interaction, c, job_id))

    async def _details(self, interaction: discord.Interaction, caller: Caller, job_id: int) -> None:
        job = await self._service.visible_job(caller.requester, job_id, is_admin=caller.is_admin)
        embed = discord.Embed(description=fit(texts.details_text(job), 4096))
        await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)

    async def _original(self, interaction: discord.Interaction, caller: Caller, job_id: int) -> None:
        picture = await self._service.original_png(caller.requester, job_id, is_admin=caller.is_admin)
        file = discord.File(io.BytesIO(picture.png), filename=picture.filename)
        await interaction.edit_original_response(attachments=[file], allowed_mentions=NO_MENTIONS)

    async def _delete(self, interaction: discord.Interaction, caller: Caller, job_id: int) -> None:
        job = await self._service.job_for_owner_or_admin(caller.requester, job_id, is_admin=caller.is_admin)
        if interaction.message is not None:
            # Already gone is fine: another click or a moderator deleted it first.
            with contextlib.suppress(discord.NotFound):
                await interaction.message.delete()
        log.info("job=%s result deleted by user %s", job.id, interaction.user.id)
        await reply(interaction, f"Deleted the picture of job #{job.id}.")

    async def drain(self, within_s: float) -> None:
        """Let answers already being written finish (bounded), on shutdown."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=within_s)


def _place(interaction: discord.Interaction) -> Place:
    user = interaction.user
    # The bot runs without the guilds intent, so guild roles are not cached and Member.roles is empty;
    # the role ids from the interaction payload are kept in _roles regardless.
    roles = frozenset(user._roles) if isinstance(user, discord.Member) else frozenset[int]()
    private = interaction.guild_id is None
    return Place(user.id, interaction.channel_id or 0, private, interaction.guild_id, roles)


def _requester(interaction: discord.Interaction) -> Requester:
    """Who asked and where the answer goes (a DM's channel id is the DM itself)."""
    return Requester(
        platform=Platform.DISCORD,
        chat_id=str(interaction.channel_id),
        user_id=str(interaction.user.id),
        user_name=interaction.user.display_name,
        guild_id=None if interaction.guild_id is None else str(interaction.guild_id),
    )


def fit(text: str, limit: int = 2000) -> str:
    """Cut multi-line text to Discord's length limit, keeping its lines."""
    return text if len(text) <= limit else text[: limit - 1] + texts.ELLIPSIS


async def reply(interaction: discord.Interaction, text: str) -> None:
    try:
        await interaction.edit_original_response(content=fit(text), allowed_mentions=NO_MENTIONS)
    except discord.HTTPException as error:
        log.warning("interaction %s could not be answered: %s", interaction.id, error)


ASPECT_CHOICES = [app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIOS]
Seed = app_commands.Range[int, 0, MAX_SEED]
JobId = app_commands.Range[int, 1, MAX_JOB_ID]


def build_commands(
    handlers: DiscordHandlers, service: BotService
) -> list[app_commands.Command[Any, Any, None]]:
    """/imagine, /reroll, /history, /queue, /cancel, /show and /help, calling `handlers`."""

    @app_commands.command(name="imagine", description="Draw a picture from your words.")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --steps 20 --no text",
        seed="The same seed and prompt give the same picture (0 to 4294967295)",
        steps="More steps, more detail, more time",
        aspect="Width to height",
        negative="What to leave out of the picture",
    )
    @app_commands.choices(aspect=ASPECT_CHOICES)
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        seed: Seed | None = None,
        steps: app_commands.Range[int, 1, 100] | None = None,
        aspect: app_commands.Choice[str] | None = None,
        negative: str | None = None,
    ) -> None:
        await handlers.imagine(
            interaction,
            prompt,
            seed=seed,
            steps=steps,
            aspect=None if aspect is None else aspect.value,
            negative_prompt=negative,
        )

    @app_commands.command(name="reroll", description="Draw your last prompt here again, with a new seed.")
    @app_commands.describe(seed="Use this seed instead of a random one", job="Reroll this job id instead")
    async def reroll(
        interaction: discord.Interaction, seed: Seed | None = None, job: JobId | None = None
    ) -> None:
        await handlers.queued(
            interaction, lambda c: service.reroll(c.requester, seed=seed, job_id=job, is_admin=c.is_admin)
        )

    async def history_text(caller: Caller) -> str:
        return texts.history_text(await service.history(caller.requester))

    @app_commands.command(name="history", description="Your last pictures, with their seeds.")
    async def history(interaction: discord.Interaction) -> None:
        await handlers.text(interaction, history_text)

    async def queue_text(caller: Caller) -> str:
        return texts.queue_text(await service.queue_overview(caller.requester))

    @app_commands.command(name="queue", description="What is running and where your pictures stand.")
    async def queue(interaction: discord.Interaction) -> None:
        await handlers.text(interaction, queue_text)

    @app_commands.command(name="cancel", description="Stop your newest waiting or running picture.")
    @app_commands.describe(job="Cancel this job id instead")
    async def cancel(interaction: discord.Interaction, job: JobId | None = None) -> None:
        async def cancelled(caller: Caller) -> str:
            done = await service.cancel(caller.requester, job, is_admin=caller.is_admin)
            log.info("job=%s cancelled from Discord by user %s", done.id, interaction.user.id)
            return texts.cancelled_text(done)

        await handlers.text(interaction, cancelled)

    @app_commands.command(name="show", description="Post a finished picture again.")
    @app_commands.describe(job="The job id (see /history)")
    async def show(interaction: discord.Interaction, job: JobId) -> None:
        await handlers.show(interaction, job)

    async def help_text(caller: Caller) -> str:
        return texts.help_text(usage, handlers.limits)

    @app_commands.command(name="help", description="The commands, the flags, the limits and examples.")
    async def help_command(interaction: discord.Interaction) -> None:
        await handlers.text(interaction, help_text)

    commands: list[app_commands.Command[Any, Any, None]] = [
        imagine,
        reroll,
        history,
        queue,
        cancel,
        show,
        help_command,
    ]
    # /help lists the commands as registered, so it cannot name an option a command does not have.
    usage = [(command_usage(command), command.description) for command in commands]
    return commands


def command_usage(command: app_commands.Command[Any, Any, None]) -> str:
    """ "/reroll [seed] [job]": the command with its options, required ones in angle brackets."""
    options = (f"<{p.name}>" if p.required else f"[{p.name}]" for p in command.parameters)
    return " ".join((f"/{command.name}", *options))


async def on_tree_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """Options Discord should have checked but did not, or a command this bot no longer has."""
    if isinstance(error, app_commands.TransformerError):
        text = f"I could not read the value {error.value!r}. Check the option and try again, e.g. {EXAMPLE}"
    elif isinstance(error, app_commands.CommandNotFound):
        text = "I don't know that command (any more). Type / to see the commands I have."
    else:
        log.error("interaction %s failed", interaction.id, exc_info=error)
        text = texts.unexpected_error_text(error.__cause__ or error)
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException as exc:
        log.warning("interaction %s could not be answered: %s", interaction.id, exc)
