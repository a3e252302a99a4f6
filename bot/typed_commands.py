"""Commands written as text, for platforms whose users type them: ``/imagine@majicbot a fox --ar 16:9``.

`read_command_line` splits a line into the command, the bot it is addressed to and the text after it;
`read_options` reads that text into the options of `bot.command_table`, by name, for
`ChatCommands.run`, so a typed command means exactly what the same command with options means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.command_parser import read_job_argument, read_reroll_arguments
from bot.command_table import ImageFetch, OptionValue, OptionValues
from bot.user_settings import parse_settings_command

# As Telegram marks a bot command: a slash, up to 32 letters, digits or underscores, and "@bot".
_COMMAND_LINE = re.compile(
    r"/(?P<name>\w{1,32})(?:@(?P<addressee>\w+))?(?P<argument>.*)", re.DOTALL | re.ASCII
)


@dataclass(frozen=True, slots=True)
class CommandLine:
    name: str  # lower case, without the slash
    addressee: str  # the bot after "@", "" when the command names none
    argument: str  # the text after the command, stripped

    def is_for(self, bot_username: str) -> bool:
        """Whether this bot should answer: "/imagine" or "/imagine@thisbot", not "@otherbot"."""
        return not self.addressee or self.addressee.lower() == bot_username.lower()


def read_command_line(text: str) -> CommandLine | None:
    """The command `text` starts with; None when it starts with none."""
    line = _COMMAND_LINE.match(text)
    if line is None:
        return None
    return CommandLine(line["name"].lower(), line["addressee"] or "", line["argument"].strip())


def read_options(name: str, argument: str, image: ImageFetch | None = None) -> OptionValues:
    """The options of command `name`, by name, read from the text after it (`image`: the picture
    sent with an /imagine). /settings may name any setting, not only the two Discord has options for."""
    words = argument.split()
    values: dict[str, OptionValue] = {}
    if name == "imagine":
        values = {"prompt": argument, "image": image}
    elif name == "reroll":
        values["seed"], values["job"] = read_reroll_arguments(words)
    elif name in ("cancel", "show"):
        values["job"] = read_job_argument(words, name)
    elif name == "settings":
        command = parse_settings_command(argument)
        values["reset"] = command.reset
        if command.name is not None:
            values[command.name.value] = command.value
    elif name in ("ban", "unban"):
        values["user"], _, values["reason"] = argument.strip().partition(" ")
    return OptionValues(values)
