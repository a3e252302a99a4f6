"""The slash commands and button actions: defer first, then parse, one BotService call, render.

Every answer is ephemeral: the status line of a job, mistakes, /history and /queue are the asker's
business; the finished image is posted for everyone by the presenter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord
from discord import app_commands

from bot import texts
from bot.command_parser import ASPECT_RATIOS, MAX_JOB_ID, MAX_SEED, parse_imagine, with_options
from bot.discord.access import Access
from bot.discord.presenter import NO_MENTIONS, DiscordPresenter
from bot.errors import UserFacingError
from bot.service import BotService
from bot.settings import LimitsSettings
from bot.standing import Queued

log = logging.getLogger(__name__)

EXAMPLE = "/imagine prompt: a red fox in the snow --ar 16:9"


class DiscordHandlers:
    """What each command and button does. Implements `bot.discord.client.ButtonActions`."""

    def __init__(
        self, service: BotService, access: Access, presenter: DiscordPresenter, limits: LimitsSettings
    ) -> None:
        self._service = service
        self._access = access
        self._presenter = presenter
        self._limits = limits
        self._in_flight: set[asyncio.Task[Any]] = set()

    # -- slash commands -----------------------------------------------------------------------
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: str,
        *,
        seed: int | None,
        steps: int | None,
        aspect: str | None,
        negative: str | None,
    ) -> None:
        async def work() -> None:
            self._access.check(interaction)
            args = with_options(
                parse_imagine(prompt, self._limits),
                self._limits,
                seed=seed,
                steps=steps,
                aspect=aspect,
                negative_prompt=negative,
            )
            queued = await self._service.imagine(
                self._access.requester(interaction), args, is_admin=self._is_admin(interaction)
            )
            log.info("job=%s queued from Discord by user %s", queued.job.id, interaction.user.id)
            await self._show_queued(interaction, queued)

        await self._answer(interaction, work)

    async def reroll_command(
        self, interaction: discord.Interaction, *, seed: int | None, job: int | None
    ) -> None:
        async def work() -> None:
            self._access.check(interaction)
            queued = await self._service.reroll(
                self._access.requester(interaction),
                seed=seed,
                job_id=job,
                is_admin=self._is_admin(interaction),
            )
            await self._show_queued(interaction, queued)

        await self._answer(interaction, work)

    async def history(self, interaction: discord.Interaction) -> None:
        async def work() -> None:
            self._access.check(interaction)
            jobs = await self._service.history(self._access.requester(interaction))
            await _reply(interaction, _fit(texts.history_text(jobs), 2000))

        await self._answer(interaction, work)

    async def queue(self, interaction: discord.Interaction) -> None:
        async def work() -> None:
            self._access.check(interaction)
            overview = await self._service.queue_overview(self._access.requester(interaction))
            await _reply(interaction, _fit(texts.queue_text(overview), 2000))

        await self._answer(interaction, work)

    async def cancel(self, interaction: discord.Interaction, *, job: int | None) -> None:
        async def work() -> None:
            self._access.check(interaction)
            cancelled = await self._service.cancel(
                self._access.requester(interaction), job, is_admin=self._is_admin(interaction)
            )
            log.info("job=%s cancelled from Discord by user %s", cancelled.id, interaction.user.id)
            await _reply(interaction, texts.cancelled_text(cancelled))

        await self._answer(interaction, work)

    async def show(self, interaction: discord.Interaction, *, job: int) -> None:
        async def work() -> None:
            self._access.check(interaction)
            found = await self._service.show(
                self._access.requester(interaction), job, is_admin=self._is_admin(interaction)
            )
            await self._presenter.show_result(interaction, found)

        await self._answer(interaction, work)

    async def help(self, interaction: discord.Interaction, commands: Sequence[tuple[str, str]]) -> None:
        async def work() -> None:
            self._access.check(interaction)
            await _reply(interaction, _fit(texts.help_text(commands, self._limits), 2000))

        await self._answer(interaction, work)

    # -- buttons ------------------------------------------------------------------------------
    async def reroll(self, interaction: discord.Interaction, job_id: int) -> None:
        async def work() -> None:
            self._access.check(interaction)
            queued = await self._service.reroll(
                self._access.requester(interaction),
                job_id=job_id,
                from_button=True,
                is_admin=self._is_admin(interaction),
            )
            await self._show_queued(interaction, queued)

        await self._answer(interaction, work)

    async def retry(self, interaction: discord.Interaction, job_id: int) -> None:
        async def work() -> None:
            self._access.check(interaction)
            failed = await self._service.job(job_id)
            queued = await self._service.reroll(
                self._access.requester(interaction),
                seed=failed.request.seed,
                job_id=job_id,
                from_button=True,
                is_admin=self._is_admin(interaction),
            )
            await self._show_queued(interaction, queued)

        await self._answer(interaction, work)

    async def details(self, interaction: discord.Interaction, job_id: int) -> None:
        async def work() -> None:
            self._access.check(interaction)
            job = await self._service.job(job_id)
            embed = discord.Embed(description=_fit(texts.details_text(job), 4096))
            await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)

        await self._answer(interaction, work)

    async def delete(self, interaction: discord.Interaction, job_id: int) -> None:
        async def work() -> None:
            self._access.check(interaction)
            job = await self._service.job_for_owner_or_admin(
                self._access.requester(interaction), job_id, is_admin=self._is_admin(interaction)
            )
            if interaction.message is not None:
                # Already gone is fine: another click or a moderator deleted it first.
                with contextlib.suppress(discord.NotFound):
                    await interaction.message.delete()
            log.info("job=%s result deleted by user %s", job.id, interaction.user.id)
            await _reply(interaction, f"Deleted the picture of job #{job.id}.")

        await self._answer(interaction, work)

    # -- plumbing -----------------------------------------------------------------------------
    async def drain(self, within_s: float) -> None:
        """Let answers already being written finish (bounded), on shutdown."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=within_s)

    async def _show_queued(self, interaction: discord.Interaction, queued: Queued) -> None:
        """The job is queued whatever happens here: a failure to say so must never end in the generic
        "try again" (that would queue a second job); the picture is posted when done either way."""
        try:
            await self._presenter.open(interaction, queued)
        except Exception:
            log.exception("job=%s is queued, but its status line could not be shown", queued.job.id)

    def _is_admin(self, interaction: discord.Interaction) -> bool:
        return self._access.is_admin(interaction.user.id)

    async def _answer(self, interaction: discord.Interaction, work: Callable[[], Awaitable[None]]) -> None:
        # Deferring comes first, before anything that could take time: Discord forgets an interaction
        # that is not acknowledged within 3 seconds.
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as error:
            log.warning("interaction %s could not be acknowledged: %s", interaction.id, error)
            return
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await work()
        except UserFacingError as error:
            await _reply(interaction, str(error))
        except Exception as error:
            log.exception("interaction %s failed", interaction.id)
            await _reply(interaction, texts.unexpected_error_text(error))
        finally:
            if task is not None:
                self._in_flight.discard(task)


def _fit(text: str, limit: int) -> str:
    """Cut multi-line text to Discord's length limit, keeping its lines."""
    return text if len(text) <= limit else text[: limit - 1] + texts.ELLIPSIS


async def _reply(interaction: discord.Interaction, text: str) -> None:
    try:
        await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException as error:
        log.warning("interaction %s could not be answered: %s", interaction.id, error)


ASPECT_CHOICES = [app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIOS]


def build_commands(handlers: DiscordHandlers) -> list[app_commands.Command[Any, Any, None]]:
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
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
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
            negative=negative,
        )

    @app_commands.command(name="reroll", description="Draw your last prompt here again, with a new seed.")
    @app_commands.describe(seed="Use this seed instead of a random one", job="Reroll this job id instead")
    async def reroll(
        interaction: discord.Interaction,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        job: app_commands.Range[int, 1, MAX_JOB_ID] | None = None,
    ) -> None:
        await handlers.reroll_command(interaction, seed=seed, job=job)

    @app_commands.command(name="history", description="Your last pictures, with their seeds.")
    async def history(interaction: discord.Interaction) -> None:
        await handlers.history(interaction)

    @app_commands.command(name="queue", description="What is running and where your pictures stand.")
    async def queue(interaction: discord.Interaction) -> None:
        await handlers.queue(interaction)

    @app_commands.command(name="cancel", description="Stop your newest waiting or running picture.")
    @app_commands.describe(job="Cancel this job id instead")
    async def cancel(
        interaction: discord.Interaction, job: app_commands.Range[int, 1, MAX_JOB_ID] | None = None
    ) -> None:
        await handlers.cancel(interaction, job=job)

    @app_commands.command(name="show", description="Post a finished picture again.")
    @app_commands.describe(job="The job id (see /history)")
    async def show(interaction: discord.Interaction, job: app_commands.Range[int, 1, MAX_JOB_ID]) -> None:
        await handlers.show(interaction, job=job)

    @app_commands.command(name="help", description="The commands, the flags, the limits and examples.")
    async def help_command(interaction: discord.Interaction) -> None:
        await handlers.help(interaction, usage)

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
