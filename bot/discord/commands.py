"""The slash commands and button presses: admitted once at the entrance (`bot.entrance`), one
`ChatCommands` call, rendered. The slash commands are declared from `bot.command_table`, one per spec.

Every answer is ephemeral: the status line of a job, mistakes, /history and /queue are the asker's
business; the finished image is posted for everyone by the presenter.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord
from discord import app_commands

from bot import texts
from bot.access import AccessPolicy, Caller, Place
from bot.answers_in_flight import AnswersInFlight
from bot.chat_commands import Answer, ChatCommands, Details, Refused, Reply, SettingsShown, Shown
from bot.command_table import COMMAND_TABLE, CommandSpec, OptionKind, OptionSpec, OptionValue, OptionValues
from bot.discord import DISCORD
from bot.discord.buttons import components, settings_components
from bot.discord.presenter import NO_MENTIONS, DiscordPresenter
from bot.entrance import ChatEntrance, serve
from bot.errors import InvalidRequest
from bot.input_images import check_file_size
from bot.job_view import ButtonPress, ButtonSpec
from bot.service import Picture
from bot.settings import LimitsSettings
from bot.settings_menu import SettingPress
from bot.standing import Queued
from storage.jobs import Requester

log = logging.getLogger(__name__)

MAX_CONTENT = 2000  # characters of a message's content
MAX_DESCRIPTION = 4096  # characters of an embed's description
_CALLER = "majicbot.caller"  # the admitted `Caller`, in `Interaction.extras`
EXAMPLE = "/imagine prompt: a red fox in the snow --ar 16:9"
SETTINGS_HINT = (
    "Pick new values below. Texts are options of /settings: negative (left out of every picture) and "
    "style (added to every prompt), e.g. /settings style: watercolor; off clears one. "
    "/settings reset: True puts everything back."
)


class DiscordHandlers:
    """The entrance (`bot.discord.client.Entrance`): admits an interaction once, runs one
    `ChatCommands` call and renders its answer."""

    def __init__(
        self,
        commands: ChatCommands,
        policy: AccessPolicy,
        presenter: DiscordPresenter,
        answers: AnswersInFlight,
    ) -> None:
        """`answers`: discord.py answers each interaction in a task of its own, which its frontend's
        stop lets finish."""
        self.commands = commands
        self._entrance = ChatEntrance(commands, policy, explain_refusals=True)
        self._presenter = presenter
        self._answers = answers

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
        admitted = await self._entrance.admit(_place(interaction), _requester(interaction))
        if isinstance(admitted, Refused):
            await reply(interaction, admitted.text)
            return False
        interaction.extras[_CALLER] = admitted  # whom the command's callback then runs for
        return True

    async def answer(
        self, interaction: discord.Interaction, call: Callable[[Caller], Awaitable[Answer]]
    ) -> None:
        """Run an admitted interaction's call and show its answer; a mistake or failure is the answer."""
        caller: Caller = interaction.extras[_CALLER]
        with self._answers.tracking():
            await serve(
                lambda: call(caller),
                lambda answer: self._render(interaction, answer),
                f"interaction {interaction.id}",
            )

    async def press(self, interaction: discord.Interaction, press: ButtonPress | SettingPress) -> None:
        await self.answer(interaction, lambda caller: self.commands.press(caller, press))

    async def _render(self, interaction: discord.Interaction, answer: Answer) -> None:
        if isinstance(answer, Queued):  # `serve` keeps a failure here from inviting a second job
            await self._presenter.open(interaction, answer)
        elif isinstance(answer, Reply):
            await reply(interaction, answer.text, answer.buttons)
        elif isinstance(answer, Refused):
            await reply(interaction, answer.text)
        elif isinstance(answer, Shown):
            await self._presenter.show_result(interaction, answer.job)
        elif isinstance(answer, Details):
            embed = discord.Embed(description=texts.clip(answer.text, MAX_DESCRIPTION))
            await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)
        elif isinstance(answer, SettingsShown):
            selects = settings_components(answer.view)
            text = f"{answer.view.summary}\n\n{SETTINGS_HINT}"
            await interaction.edit_original_response(
                content=texts.clip(text, MAX_CONTENT), view=selects, allowed_mentions=NO_MENTIONS
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
            await reply(interaction, texts.deleted_text(answer.job))


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


async def reply(interaction: discord.Interaction, text: str, buttons: Sequence[ButtonSpec] = ()) -> None:
    extra: dict[str, Any] = {"view": components(buttons)} if buttons else {}
    try:
        await interaction.edit_original_response(
            content=texts.clip(text, MAX_CONTENT), allowed_mentions=NO_MENTIONS, **extra
        )
    except discord.HTTPException as error:
        log.warning("interaction %s could not be answered: %s", interaction.id, error)


def build_commands(handlers: DiscordHandlers) -> list[app_commands.Command[Any, Any, None]]:
    """A slash command for each command of `bot.command_table.COMMAND_TABLE`, answered by `handlers`."""
    return [slash_command(spec, handlers) for spec in COMMAND_TABLE]


def slash_command(spec: CommandSpec, handlers: DiscordHandlers) -> app_commands.Command[Any, Any, None]:
    """`spec` as a discord.py command. discord.py reads a command's options from its callback's
    signature, so the callback is given one made from the spec: typed, ranged and with choices, as
    the decorators would make them; Discord's client then checks the values before sending them."""
    limits = handlers.commands.limits

    async def callback(interaction: discord.Interaction[Any], /, **options: Any) -> None:
        values = OptionValues({name: _value(value, limits) for name, value in options.items()})
        await handlers.answer(interaction, lambda caller: handlers.commands.run(caller, spec.name, values))

    interaction = inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = [
        inspect.Parameter(
            option.name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=_annotation(option, limits),
            **({} if option.required else {"default": None}),
        )
        for option in spec.options
    ]
    callback.__signature__ = inspect.Signature([interaction, *parameters])  # type: ignore[attr-defined]
    callback.__name__ = callback.__qualname__ = spec.name
    app_commands.describe(**{o.name: o.description for o in spec.options})(callback)
    app_commands.choices(**{o.name: _choices(o, limits) for o in spec.options if o.choices})(callback)
    return app_commands.Command(name=spec.name, description=spec.description, callback=callback)


def _annotation(option: OptionSpec, limits: LimitsSettings) -> Any:
    """The type discord.py reads `option` from (Optional when the option may be left out)."""
    base: Any
    if option.choices is not None:
        base = app_commands.Choice[str] if option.kind is OptionKind.TEXT else app_commands.Choice[int]
    elif option.kind in (OptionKind.INTEGER, OptionKind.NUMBER):
        number = int if option.kind is OptionKind.INTEGER else float
        ranged = option.min_value is not None or option.max_value is not None
        base = app_commands.Range[number, option.min_value, option.max_value] if ranged else number
    else:
        plain = {OptionKind.TEXT: str, OptionKind.BOOLEAN: bool, OptionKind.IMAGE: discord.Attachment}
        base = plain[option.kind]
    return base if option.required else base | None


def _choices(option: OptionSpec, limits: LimitsSettings) -> list[app_commands.Choice[Any]]:
    return [app_commands.Choice(name=str(value), value=value) for value in option.choices_for(limits)]


def _value(value: Any, limits: LimitsSettings) -> OptionValue:
    """An option's value as `ChatCommands.run` takes it: a choice's value, an attachment's fetch."""
    if isinstance(value, app_commands.Choice):
        return value.value  # type: ignore[no-any-return]
    if isinstance(value, discord.Attachment):
        return lambda: read_attachment(value, limits)
    return value  # type: ignore[no-any-return]


async def read_attachment(attachment: discord.Attachment, limits: LimitsSettings) -> bytes:
    """The bytes of an image prompt's attachment; too large a file is refused before it is fetched."""
    check_file_size(attachment.size, limits)
    try:
        return await attachment.read()  # its size is checked again, with its type, by the service
    except discord.HTTPException as error:
        log.warning("attachment %s could not be fetched: %s", attachment.id, error)
        raise InvalidRequest("I could not fetch your image from Discord; attach it again.") from None


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
