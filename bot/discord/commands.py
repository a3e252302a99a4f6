"""The slash commands and button presses: admitted once at the entrance, one `ChatCommands` call, rendered.

Every answer is ephemeral: the status line of a job, mistakes, /history and /queue are the asker's
business; the finished image is posted for everyone by the presenter.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord
from discord import app_commands

from bot import texts
from bot.access import AccessPolicy, Caller, Place
from bot.chat_commands import Answer, ChatCommands, Details, Reply, SettingsShown, Shown
from bot.command_parser import ASPECT_RATIOS, MAX_JOB_ID, MAX_SEED, read_imagine, with_options
from bot.discord import DISCORD
from bot.discord.buttons import components, settings_components
from bot.discord.presenter import NO_MENTIONS, DiscordPresenter
from bot.errors import InvalidRequest, UserFacingError
from bot.input_images import check_file_size
from bot.job_view import ButtonPress, ButtonSpec
from bot.service import Picture
from bot.settings import LimitsSettings
from bot.settings_menu import SettingPress
from bot.standing import Queued
from bot.user_settings import SettingName
from storage.jobs import Requester

log = logging.getLogger(__name__)

EXAMPLE = "/imagine prompt: a red fox in the snow --ar 16:9"
SETTINGS_HINT = (
    "Pick new values below. Texts are options of /settings: negative (left out of every picture) and "
    "style (added to every prompt), e.g. /settings style: watercolor; off clears one. "
    "/settings reset: True puts everything back."
)


class DiscordHandlers:
    """The entrance (`bot.discord.client.Entrance`): admits an interaction once, runs one
    `ChatCommands` call and renders its answer."""

    def __init__(self, commands: ChatCommands, policy: AccessPolicy, presenter: DiscordPresenter) -> None:
        self.commands = commands
        self._policy = policy
        self._presenter = presenter
        self._in_flight: set[asyncio.Task[Any]] = set()

    async def admit(self, interaction: discord.Interaction, *, in_place: bool = False) -> bool:
        # Deferring comes first, before anything that could take time: Discord forgets an interaction
        # that is not acknowledged within 3 seconds.
        try:
            if in_place:
                await interaction.response.defer()
            else:
                await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as error:
            log.warning("interaction %s could not be acknowledged: %s", interaction.id, error)
            return False
        try:
            self._policy.check(_place(interaction))
            await self.commands.admit(self._caller(interaction))
        except UserFacingError as error:
            log.info("refused discord user %s in channel %s", interaction.user.id, interaction.channel_id)
            await reply(interaction, str(error))
            return False
        except Exception as error:
            log.exception("interaction %s: the entrance check failed", interaction.id)
            await reply(interaction, texts.unexpected_error_text(error))
            return False
        return True

    def _caller(self, interaction: discord.Interaction) -> Caller:
        return Caller(_requester(interaction), self._policy.is_admin(interaction.user.id))

    async def answer(
        self, interaction: discord.Interaction, call: Callable[[Caller], Awaitable[Answer]]
    ) -> None:
        """Run an admitted interaction's call and show its answer; a mistake or failure is the answer."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._render(interaction, await call(self._caller(interaction)))
        except UserFacingError as error:
            await reply(interaction, str(error))
        except Exception as error:
            log.exception("interaction %s failed", interaction.id)
            await reply(interaction, texts.unexpected_error_text(error))
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def press(self, interaction: discord.Interaction, press: ButtonPress | SettingPress) -> None:
        await self.answer(interaction, lambda caller: self.commands.press(caller, press))

    async def _render(self, interaction: discord.Interaction, answer: Answer) -> None:
        if isinstance(answer, Queued):
            # Queued whatever happens now: a failure to say so must never end in the generic "try
            # again" (that would queue a second job); the picture is posted when done either way.
            try:
                await self._presenter.open(interaction, answer)
            except Exception:
                log.exception("job=%s is queued, but its status line could not be shown", answer.job.id)
        elif isinstance(answer, Reply):
            await reply(interaction, answer.text, answer.buttons)
        elif isinstance(answer, Shown):
            await self._presenter.show_result(interaction, answer.job)
        elif isinstance(answer, Details):
            embed = discord.Embed(description=fit(answer.text, 4096))
            await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)
        elif isinstance(answer, SettingsShown):
            selects = settings_components(answer.view)
            text = f"{answer.view.summary}\n\n{SETTINGS_HINT}"
            await interaction.edit_original_response(
                content=fit(text), view=selects, allowed_mentions=NO_MENTIONS
            )
        elif isinstance(answer, Picture):
            files = [
                discord.File(io.BytesIO(p.png), filename=p.filename, spoiler=answer.job.spoiler)
                for p in (answer, *answer.others)
            ]
            await interaction.edit_original_response(attachments=files, allowed_mentions=NO_MENTIONS)
        else:
            if interaction.message is not None:
                # Already gone is fine: another click or a moderator deleted it first.
                with contextlib.suppress(discord.NotFound):
                    await interaction.message.delete()
            log.info("result deleted by user %s job=%d", interaction.user.id, answer.job.id)
            await reply(interaction, f"Deleted the picture of job #{answer.job.id}.")

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
        platform=DISCORD,
        chat_id=str(interaction.channel_id),
        user_id=str(interaction.user.id),
        user_name=interaction.user.display_name,
        guild_id=None if interaction.guild_id is None else str(interaction.guild_id),
    )


def fit(text: str, limit: int = 2000) -> str:
    """Cut multi-line text to Discord's length limit, keeping its lines."""
    return text if len(text) <= limit else text[: limit - 1] + texts.ELLIPSIS


async def reply(interaction: discord.Interaction, text: str, buttons: Sequence[ButtonSpec] = ()) -> None:
    extra: dict[str, Any] = {"view": components(buttons)} if buttons else {}
    try:
        await interaction.edit_original_response(content=fit(text), allowed_mentions=NO_MENTIONS, **extra)
    except discord.HTTPException as error:
        log.warning("interaction %s could not be answered: %s", interaction.id, error)


ASPECT_CHOICES = [app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIOS]
Seed = app_commands.Range[int, 0, MAX_SEED]
JobId = app_commands.Range[int, 1, MAX_JOB_ID]


def build_commands(handlers: DiscordHandlers) -> list[app_commands.Command[Any, Any, None]]:
    """/imagine, /reroll, /history, /queue, /cancel, /show, /settings, /help and the operators' /ban,
    /unban and /bans, answered by `handlers`."""
    commands, limits = handlers.commands, handlers.commands.limits
    count_choices = [app_commands.Choice(name=str(n), value=n) for n in range(1, limits.max_images + 1)]

    @app_commands.command(name="imagine", description="Draw a picture from your words.")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --steps 20 --no text --n 4",
        seed="The same seed and prompt give the same picture (0 to 4294967295)",
        steps="More steps, more detail, more time",
        aspect="Width to height",
        negative="What to leave out of the picture",
        n="How many pictures to draw at once",
        image="Start from this picture (PNG, JPEG or WebP)",
        strength="With an image: 0.1 stays close to it, 1.0 keeps only its idea",
    )
    @app_commands.choices(aspect=ASPECT_CHOICES)
    @app_commands.choices(n=count_choices)
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        seed: Seed | None = None,
        steps: app_commands.Range[int, 1, 100] | None = None,
        aspect: app_commands.Choice[str] | None = None,
        negative: str | None = None,
        n: app_commands.Choice[int] | None = None,
        image: discord.Attachment | None = None,
        strength: float | None = None,
    ) -> None:
        async def call(caller: Caller) -> Answer:
            # Only read here: the service checks the merged arguments, once.
            args = with_options(
                read_imagine(prompt, limits),
                limits,
                seed=seed,
                steps=steps,
                aspect=None if aspect is None else aspect.value,
                negative_prompt=negative,
                count=None if n is None else n.value,
                strength=strength,
            )
            data = None if image is None else await read_attachment(image, limits)
            return await commands.imagine(caller, args, data)

        await handlers.answer(interaction, call)

    @app_commands.command(name="reroll", description="Draw your last prompt here again, with a new seed.")
    @app_commands.describe(seed="Use this seed instead of a random one", job="Reroll this job id instead")
    async def reroll(
        interaction: discord.Interaction, seed: Seed | None = None, job: JobId | None = None
    ) -> None:
        await handlers.answer(interaction, lambda caller: commands.reroll(caller, seed, job))

    @app_commands.command(name="history", description="Your last pictures, with their seeds.")
    async def history(interaction: discord.Interaction) -> None:
        await handlers.answer(interaction, commands.history)

    @app_commands.command(name="queue", description="What is running and where your pictures stand.")
    async def queue(interaction: discord.Interaction) -> None:
        await handlers.answer(interaction, commands.queue)

    @app_commands.command(name="cancel", description="Stop your newest waiting or running picture.")
    @app_commands.describe(job="Cancel this job id instead")
    async def cancel(interaction: discord.Interaction, job: JobId | None = None) -> None:
        await handlers.answer(interaction, lambda caller: commands.cancel(caller, job))

    @app_commands.command(name="show", description="Post a finished picture again.")
    @app_commands.describe(job="The job id (see /history)")
    async def show(interaction: discord.Interaction, job: JobId) -> None:
        await handlers.answer(interaction, lambda caller: commands.show(caller, job))

    @app_commands.command(name="settings", description="Your defaults for /imagine (flags override them).")
    @app_commands.describe(
        negative="Leave this out of every picture (off clears it)",
        style="Added to the end of every prompt, e.g. watercolor (off clears it)",
        reset="Put every setting back to the default first",
    )
    async def settings(
        interaction: discord.Interaction,
        negative: str | None = None,
        style: str | None = None,
        reset: bool = False,
    ) -> None:
        typed = ((SettingName.NEGATIVE, negative), (SettingName.STYLE, style))
        changes = [(name, value) for name, value in typed if value is not None]
        await handlers.answer(interaction, lambda caller: commands.settings(caller, changes, reset=reset))

    @app_commands.command(name="help", description="The commands, the flags, the limits and examples.")
    async def help_command(interaction: discord.Interaction) -> None:
        async def call(caller: Caller) -> Answer:
            return commands.help(usage, admin_usage)

        await handlers.answer(interaction, call)

    @app_commands.command(name="ban", description="Operators: refuse every command of a user.")
    @app_commands.describe(user="Their user id or @mention", reason="Told to them with each refusal")
    async def ban(interaction: discord.Interaction, user: str, reason: str = "") -> None:
        await handlers.answer(interaction, lambda caller: commands.ban(caller, str(user), reason))

    @app_commands.command(name="unban", description="Operators: lift a user's ban.")
    @app_commands.describe(user="Their user id or @mention")
    async def unban(interaction: discord.Interaction, user: str) -> None:
        await handlers.answer(interaction, lambda caller: commands.unban(caller, str(user)))

    @app_commands.command(name="bans", description="Operators: who is banned.")
    async def bans(interaction: discord.Interaction) -> None:
        await handlers.answer(interaction, commands.bans)

    registered: list[app_commands.Command[Any, Any, None]] = [
        imagine,
        reroll,
        history,
        queue,
        cancel,
        show,
        settings,
        help_command,
    ]
    operators: list[app_commands.Command[Any, Any, None]] = [ban, unban, bans]
    # /help lists the commands as registered, so it cannot name an option a command does not have.
    usage = [(command_usage(command), command.description) for command in registered]
    admin_usage = [(command_usage(command), command.description) for command in operators]
    return registered + operators


async def read_attachment(attachment: discord.Attachment, limits: LimitsSettings) -> bytes:
    """The bytes of an image prompt's attachment; too large a file is refused before it is fetched."""
    check_file_size(attachment.size, limits)
    try:
        return await attachment.read()  # its size is checked again, with its type, by the service
    except discord.HTTPException as error:
        log.warning("attachment %s could not be fetched: %s", attachment.id, error)
        raise InvalidRequest("I could not fetch your image from Discord; attach it again.") from None


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
