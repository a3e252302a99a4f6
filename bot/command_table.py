"""Every chat command and its options, written once: the single source for /help, Telegram's command
menu, Discord's slash commands and what `ChatCommands.run` reads.

A platform declares its commands from `COMMAND_TABLE` (Discord: one slash command per `CommandSpec`,
with typed, ranged options; Telegram: the menu of the commands for everyone) and hands the values the
user gave, by option name, to `ChatCommands.run`. Adding an option here adds it everywhere; /help's
usage lines (`usage`) are made from the same specs, so they cannot name an option a command lacks.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.command_parser import ASPECT_RATIOS, MAX_JOB_ID, MAX_SEED
from bot.settings import LimitsSettings

# An image option's value: fetching it may take time and may fail, so it is fetched only once the
# rest of the command has been read (None: the message carried no picture after all).
ImageFetch = Callable[[], Awaitable[bytes | None]]
OptionValue = str | int | float | bool | ImageFetch | None


class OptionKind(enum.StrEnum):
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    IMAGE = "image"  # a picture sent with the command (Discord: an attachment option)


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option of a command. `flag`: the `/imagine` flag that writes it on a text-only platform
    (`--ar` for aspect), where it is written in the prompt instead of on its own."""

    name: str
    kind: OptionKind
    description: str  # one line, at most 100 characters (Discord's limit)
    required: bool = False
    min_value: int | float | None = None
    max_value: int | float | None = None
    choices: Callable[[LimitsSettings], Sequence[str | int]] | None = None  # given the operator's limits
    flag: str | None = None

    def choices_for(self, limits: LimitsSettings) -> tuple[str | int, ...]:
        """The values this option may take under `limits` (empty: any value of its kind)."""
        return () if self.choices is None else tuple(self.choices(limits))


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its name (without /), one line saying what it does, its options (required ones
    first, as Discord wants them) and whether only the bot's operators may use it."""

    name: str
    description: str
    options: tuple[OptionSpec, ...] = ()
    operators_only: bool = False


def _job(description: str, *, required: bool = False) -> OptionSpec:
    return OptionSpec("job", OptionKind.INTEGER, description, required, min_value=1, max_value=MAX_JOB_ID)


def _seed(description: str, *, flag: str | None = None) -> OptionSpec:
    return OptionSpec("seed", OptionKind.INTEGER, description, min_value=0, max_value=MAX_SEED, flag=flag)


def _image_counts(limits: LimitsSettings) -> range:
    return range(1, limits.max_images + 1)


COMMAND_TABLE: tuple[CommandSpec, ...] = (
    CommandSpec(
        "imagine",
        "Draw a picture from your words.",
        (
            OptionSpec(
                "prompt",
                OptionKind.TEXT,
                "What to draw. Flags work too: --ar 16:9 --seed 42 --steps 20 --no text --n 4",
                required=True,
            ),
            _seed(f"The same seed and prompt give the same picture (0 to {MAX_SEED})", flag="seed"),
            OptionSpec(
                "steps",
                OptionKind.INTEGER,
                "More steps, more detail, more time",
                min_value=1,
                max_value=100,  # the operator's own limit is checked by the service, with its words
                flag="steps",
            ),
            OptionSpec(
                "aspect", OptionKind.TEXT, "Width to height", choices=lambda _: ASPECT_RATIOS, flag="ar"
            ),
            OptionSpec("negative", OptionKind.TEXT, "What to leave out of the picture", flag="no"),
            OptionSpec(
                "n", OptionKind.INTEGER, "How many pictures to draw at once", choices=_image_counts, flag="n"
            ),
            OptionSpec("image", OptionKind.IMAGE, "Start from this picture (PNG, JPEG or WebP)"),
            OptionSpec(
                "strength",
                OptionKind.NUMBER,
                "With an image: 0.1 stays close to it, 1.0 keeps only its idea",
                flag="strength",
            ),
        ),
    ),
    CommandSpec(
        "reroll",
        "Draw your last prompt here again, with a new seed.",
        (_seed("Use this seed instead of a random one"), _job("Reroll this job id instead")),
    ),
    CommandSpec("history", "Your last pictures, with their seeds."),
    CommandSpec("queue", "What is running and where your pictures stand."),
    CommandSpec(
        "cancel", "Stop your newest waiting or running picture.", (_job("Cancel this job id instead"),)
    ),
    CommandSpec(
        "show", "Post a finished picture again.", (_job("The job id (see /history)", required=True),)
    ),
    CommandSpec(
        "settings",
        "Your defaults for /imagine (flags override them).",
        (
            OptionSpec("negative", OptionKind.TEXT, "Leave this out of every picture (off clears it)"),
            OptionSpec(
                "style", OptionKind.TEXT, "Added to the end of every prompt, e.g. watercolor (off clears it)"
            ),
            OptionSpec("reset", OptionKind.BOOLEAN, "Put every setting back to the default first"),
        ),
    ),
    CommandSpec("help", "The commands, the flags, the limits and examples."),
    CommandSpec(
        "ban",
        "Operators: refuse every command of a user.",
        (
            OptionSpec("user", OptionKind.TEXT, "Their user id or @mention", required=True),
            OptionSpec("reason", OptionKind.TEXT, "Told to them with each refusal"),
        ),
        operators_only=True,
    ),
    CommandSpec(
        "unban",
        "Operators: lift a user's ban.",
        (OptionSpec("user", OptionKind.TEXT, "Their user id or @mention", required=True),),
        operators_only=True,
    ),
    CommandSpec("bans", "Operators: who is banned.", operators_only=True),
)


def usage(command: CommandSpec, *, typed: bool = False) -> str:
    """ "/reroll [seed] [job]": the command with its options, required ones in angle brackets.

    `typed`: as written on a text-only platform, where the options that are `/imagine` flags go into
    the prompt ("/imagine <prompt> [--flags]") and a picture is sent with the command instead."""
    shown = [o for o in command.options if not typed or (o.flag is None and o.kind is not OptionKind.IMAGE)]
    words = [f"<{o.name}>" if o.required else f"[{o.name}]" for o in shown]
    if typed and any(o.flag is not None for o in command.options):
        words.append("[--flags]")
    return " ".join((f"/{command.name}", *words))


@dataclass(frozen=True, slots=True)
class OptionValues:
    """The options a user gave to one command, by name (left out: not given). Read with the accessor
    of the option's kind; a value of another type is this program's mistake, not the user's."""

    values: Mapping[str, OptionValue]

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None or isinstance(value, str):
            return value
        raise _wrong_type(name, value)

    def integer(self, name: str) -> int | None:
        value = self.values.get(name)
        # bool is an int to Python; an integer option must never silently take True.
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise _wrong_type(name, value)

    def number(self, name: str) -> float | None:
        value = self.values.get(name)
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            return None if value is None else float(value)
        raise _wrong_type(name, value)

    def boolean(self, name: str) -> bool:
        value = self.values.get(name)
        if value is None or isinstance(value, bool):
            return value is True
        raise _wrong_type(name, value)

    def image(self, name: str) -> ImageFetch | None:
        value = self.values.get(name)
        if value is None or callable(value):
            return value
        raise _wrong_type(name, value)


def _wrong_type(name: str, value: object) -> TypeError:
    return TypeError(f"option {name!r} has a value of the wrong type: {value!r}")
