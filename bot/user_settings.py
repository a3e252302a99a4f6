"""A user's own defaults for /imagine (`/settings`): aspect ratio, steps, images per command, a
negative prompt, a style suffix added to every prompt, and whether the status line shows progress.

A flag on the command always wins (`ImagineArgs` leaves what was not given as None or ""); what is
left is filled from here, then from the operator's defaults (`request_rules.resolve_request`). The
allowed values come from the parser's table and the operator's `[limits]`, as for the flags.

Settings are stored as chosen; limits may tighten later. Reading them back (`from_stored`) therefore
brings numbers into today's range and drops texts that have grown too long, rather than failing every
command of a user who forgot what they once chose.

Both platforms show `SettingsView`: its text, and the options as data (a Telegram inline keyboard and
Discord select menus are drawn from `options`; free-text settings are typed: /settings style <text>).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from dataclasses import dataclass

from bot.command_parser import (
    ASPECT_RATIOS,
    FLAGS,
    ImagineArgs,
    fit_to_limits,
    known_aspect,
    size_for_aspect,
)
from bot.errors import InvalidRequest
from bot.request_rules import DEFAULT_SIZE
from bot.settings import LimitsSettings
from storage.user_settings import StoredSettings

DEFAULT = "default"  # the value that puts one setting back to the operator's default
_OFF = frozenset({"off", "none", "clear", "-", ""})
_TRUE = frozenset({"on", "yes", "true", "1"})
_FALSE = frozenset({"off", "no", "false", "0"})
_STEP_CHOICES = (4, 8, 12, 16, 20, 24, 28, 32, 40, 50, 60, 80, 100)
_PUNCTUATION_END = ",.;:!?"
_INTEGER = re.compile(r"-?[0-9]+")


class SettingName(enum.StrEnum):
    """The settings, named as /settings takes them."""

    ASPECT = "ar"
    STEPS = "steps"
    IMAGES = "images"
    NEGATIVE = "negative"
    STYLE = "style"
    PROGRESS = "progress"


_ALIASES: dict[str, SettingName] = {
    "aspect": SettingName.ASPECT,
    "ratio": SettingName.ASPECT,
    "n": SettingName.IMAGES,
    "no": SettingName.NEGATIVE,
    "negative_prompt": SettingName.NEGATIVE,
    "suffix": SettingName.STYLE,
} | {name.value: name for name in SettingName}

_LABELS: dict[SettingName, str] = {
    SettingName.ASPECT: "Aspect ratio",
    SettingName.STEPS: "Steps",
    SettingName.IMAGES: "Images per command",
    SettingName.NEGATIVE: "Negative prompt",
    SettingName.STYLE: "Style suffix",
    SettingName.PROGRESS: "Progress updates",
}


@dataclass(frozen=True, slots=True)
class UserSettings:
    """One user's defaults; None: the operator's (1:1 at the largest allowed size up to 1024x1024,
    `engine.default_steps`)."""

    aspect_ratio: str | None = None  # one of ASPECT_RATIOS
    steps: int | None = None
    images: int | None = None  # --n; None: limits.default_images
    negative_prompt: str = ""  # used when a command gives no --no
    style_suffix: str = ""  # added to the end of every prompt
    show_progress: bool = True  # False: the status line is not edited with position and steps

    def check(self, limits: LimitsSettings) -> UserSettings:
        """Raise InvalidRequest, saying how to fix it, if a value is outside what the limits allow."""
        if self.aspect_ratio is not None and known_aspect(self.aspect_ratio) != self.aspect_ratio:
            raise InvalidRequest(
                f'"{self.aspect_ratio}" is not an aspect ratio I know. Use one of '
                f"{', '.join(ASPECT_RATIOS)} (e.g. /settings ar 16:9), or /settings ar default."
            )
        if self.steps is not None and not limits.min_steps <= self.steps <= limits.max_steps:
            raise InvalidRequest(
                f"Steps {self.steps} is out of range: use a whole number from {limits.min_steps} to "
                f"{limits.max_steps} (e.g. /settings steps {_example_steps(limits)}), or /settings steps "
                "default."
            )
        if self.images is not None and not 1 <= self.images <= limits.max_images:
            raise InvalidRequest(
                f"Images {self.images} is out of range: use a whole number from 1 to "
                f"{limits.max_images}, e.g. /settings images 1."
            )
        if len(self.negative_prompt) > limits.max_negative_prompt_length:
            raise InvalidRequest(
                f"That negative prompt is {len(self.negative_prompt)} characters long; the limit is "
                f"{limits.max_negative_prompt_length}. Shorten it and try again."
            )
        if len(self.style_suffix) > max_style_length(limits):
            raise InvalidRequest(
                f"That style suffix is {len(self.style_suffix)} characters long; the limit is "
                f"{max_style_length(limits)}, so that half of a prompt stays yours. Shorten it and try again."
            )
        return self

    def with_value(self, name: SettingName, value: str, limits: LimitsSettings) -> UserSettings:
        """These settings with `name` set from the text `value` ("default" puts it back); checked."""
        value = value.strip()
        word = value.lower()
        changed: UserSettings
        if name is SettingName.ASPECT:
            aspect = None if word == DEFAULT else (known_aspect(value) or value)
            changed = dataclasses.replace(self, aspect_ratio=aspect)
        elif name is SettingName.STEPS:
            changed = dataclasses.replace(self, steps=None if word == DEFAULT else _whole(name, value))
        elif name is SettingName.IMAGES:
            changed = dataclasses.replace(self, images=None if word == DEFAULT else _whole(name, value))
        elif name is SettingName.NEGATIVE:
            changed = dataclasses.replace(self, negative_prompt="" if word in _OFF | {DEFAULT} else value)
        elif name is SettingName.STYLE:
            changed = dataclasses.replace(self, style_suffix="" if word in _OFF | {DEFAULT} else value)
        else:
            changed = dataclasses.replace(self, show_progress=_on_off(word))
        return changed.check(limits)

    def image_count(self, limits: LimitsSettings) -> int:
        """Images per /imagine without --n: the user's choice, else the operator's default."""
        return self.images if self.images is not None else limits.default_images

    def apply(self, args: ImagineArgs, limits: LimitsSettings) -> ImagineArgs:
        """Fill what the command's flags left unset; add the style suffix to the prompt.

        Raises InvalidRequest when the prompt fits the limit alone but not with the suffix.
        """
        width, height = args.width, args.height
        if width is None and height is None and self.aspect_ratio is not None:
            width, height = fit_to_limits(*size_for_aspect(self.aspect_ratio), limits)
        return dataclasses.replace(
            args,
            prompt=self._styled(args.prompt, limits),
            negative_prompt=args.negative_prompt or self.negative_prompt,
            steps=args.steps if args.steps is not None else self.steps,
            width=width,
            height=height,
        )

    def _styled(self, prompt: str, limits: LimitsSettings) -> str:
        prompt, suffix = prompt.strip(), self.style_suffix.strip()
        # An empty or too long prompt is left to the parser's checks, which say so in its words.
        if not suffix or not prompt or len(prompt) > limits.max_prompt_length:
            return prompt
        if prompt.lower().endswith(suffix.lower()):
            return prompt  # typed out already
        joiner = " " if prompt[-1] in _PUNCTUATION_END else ", "
        styled = f"{prompt}{joiner}{suffix}"
        if len(styled) > limits.max_prompt_length:
            raise InvalidRequest(
                f"Your prompt with your style suffix (from /settings) is {len(styled)} characters long; "
                f"the limit is {limits.max_prompt_length}. Shorten the prompt, or change the style with "
                "/settings style <text> (off clears it)."
            )
        return styled

    @classmethod
    def from_stored(cls, stored: StoredSettings, limits: LimitsSettings) -> UserSettings:
        """What is stored, made to fit today's limits (see the module's docstring)."""
        steps = stored.steps
        if steps is not None:
            steps = min(max(steps, limits.min_steps), limits.max_steps)
        images = None if stored.images is None else min(max(stored.images, 1), limits.max_images)
        negative = stored.negative_prompt
        if len(negative) > limits.max_negative_prompt_length:
            negative = ""
        style = stored.style_suffix
        if len(style) > max_style_length(limits):
            style = ""
        aspect = stored.aspect_ratio
        return cls(
            aspect_ratio=aspect if aspect is not None and known_aspect(aspect) == aspect else None,
            steps=steps,
            images=images,
            negative_prompt=negative,
            style_suffix=style,
            show_progress=stored.show_progress,
        )

    def to_stored(self) -> StoredSettings:
        return StoredSettings(**dataclasses.asdict(self))


def max_style_length(limits: LimitsSettings) -> int:
    """A style suffix may take at most half of the prompt limit."""
    return limits.max_prompt_length // 2


def read_setting_name(word: str) -> SettingName:
    """The setting a user named ("ar", "aspect", "steps", "no", ...); InvalidRequest with the list."""
    name = _ALIASES.get(word.strip().lower().removeprefix("--"))
    if name is None:
        raise InvalidRequest(
            f'"{word}" is not a setting. The settings are: {", ".join(SettingName)}; '
            "e.g. /settings steps 28, or /settings reset."
        )
    return name


@dataclass(frozen=True, slots=True)
class SettingsCommand:
    """`/settings` (show), `/settings reset`, or `/settings <name> <value>`."""

    reset: bool = False
    name: SettingName | None = None
    value: str = ""


def parse_settings_command(text: str) -> SettingsCommand:
    """Read the words after /settings (both platforms' text commands)."""
    words = text.split(maxsplit=1)
    if not words:
        return SettingsCommand()
    if words[0].lower() == "reset" and len(words) == 1:
        return SettingsCommand(reset=True)
    name = read_setting_name(words[0])
    if len(words) == 1:
        raise InvalidRequest(
            f"Give a value for {name}, e.g. /settings {name} {_example(name)} (or /settings {name} default)."
        )
    return SettingsCommand(name=name, value=words[1])


@dataclass(frozen=True, slots=True)
class SettingOption:
    """One setting as a menu: what it is set to and the values a menu offers."""

    name: SettingName
    label: str
    current: str  # as /settings takes it: "16:9", "default", "on"
    choices: tuple[str, ...]  # empty: typed text only (/settings style <text>)


@dataclass(frozen=True, slots=True)
class SettingsView:
    """What /settings shows: the text, and the options for a keyboard or select menus."""

    settings: UserSettings
    text: str
    options: tuple[SettingOption, ...]
    # The values alone, without how to change them by typing: for platforms that change them otherwise
    # (Discord's select menus and command options).
    summary: str = ""


def settings_view(settings: UserSettings, limits: LimitsSettings, default_steps: int) -> SettingsView:
    """The /settings answer for both platforms."""
    return SettingsView(
        settings=settings,
        text=settings_text(settings, limits, default_steps),
        options=_options(settings, limits, default_steps),
        summary=settings_summary(settings, limits, default_steps),
    )


def settings_text(settings: UserSettings, limits: LimitsSettings, default_steps: int) -> str:
    lines = [
        settings_summary(settings, limits, default_steps),
        "",
        "Change one with /settings <name> <value>, e.g. /settings ar 16:9, /settings steps "
        f"{_example_steps(limits)}, /settings style watercolor (off clears it), /settings progress off. "
        "/settings reset puts everything back.",
        f"Names: {', '.join(SettingName)}. Aspect ratios: {_flag_help('ar', limits)}. "
        f"Steps: {_flag_help('steps', limits)}.",
    ]
    return "\n".join(lines)


def settings_summary(settings: UserSettings, limits: LimitsSettings, default_steps: int) -> str:
    """What each setting is now, a line each."""
    if settings.aspect_ratio is None:
        width, height = fit_to_limits(*DEFAULT_SIZE, limits)
        aspect = f"1:1, {width}x{height} (the default)"
    else:
        width, height = fit_to_limits(*size_for_aspect(settings.aspect_ratio), limits)
        aspect = f"{settings.aspect_ratio}, {width}x{height}"
    steps = f"{default_steps} (the default)" if settings.steps is None else str(settings.steps)
    lines = [
        "Your settings (a flag on a command overrides them):",
        f"• {_LABELS[SettingName.ASPECT]}: {aspect}",
        f"• {_LABELS[SettingName.STEPS]}: {steps}",
        f"• {_LABELS[SettingName.IMAGES]}: {settings.image_count(limits)}",
        f"• {_LABELS[SettingName.NEGATIVE]}: {_quoted(settings.negative_prompt)}",
        f"• {_LABELS[SettingName.STYLE]}: {_quoted(settings.style_suffix)}",
        f"• {_LABELS[SettingName.PROGRESS]}: {'on' if settings.show_progress else 'off'}",
    ]
    return "\n".join(lines)


def _options(settings: UserSettings, limits: LimitsSettings, default_steps: int) -> tuple[SettingOption, ...]:
    steps = sorted(
        {limits.min_steps, default_steps, limits.max_steps}
        | {n for n in _STEP_CHOICES if limits.min_steps <= n <= limits.max_steps}
    )
    # Discord's select menus hold 25 options: "default" and 24 numbers at most.
    steps = steps[:: max(1, math.ceil(len(steps) / 24))]
    return (
        SettingOption(
            SettingName.ASPECT,
            _LABELS[SettingName.ASPECT],
            settings.aspect_ratio or DEFAULT,
            (DEFAULT, *ASPECT_RATIOS),
        ),
        SettingOption(
            SettingName.STEPS,
            _LABELS[SettingName.STEPS],
            DEFAULT if settings.steps is None else str(settings.steps),
            (DEFAULT, *(str(n) for n in steps)),
        ),
        SettingOption(
            SettingName.IMAGES,
            _LABELS[SettingName.IMAGES],
            str(settings.image_count(limits)),
            tuple(str(n) for n in range(1, limits.max_images + 1)),
        ),
        SettingOption(SettingName.NEGATIVE, _LABELS[SettingName.NEGATIVE], settings.negative_prompt, ()),
        SettingOption(SettingName.STYLE, _LABELS[SettingName.STYLE], settings.style_suffix, ()),
        SettingOption(
            SettingName.PROGRESS,
            _LABELS[SettingName.PROGRESS],
            "on" if settings.show_progress else "off",
            ("on", "off"),
        ),
    )


def _quoted(text: str) -> str:
    return f'"{text}"' if text else "none"


def _flag_help(name: str, limits: LimitsSettings) -> str:
    return next(flag.explain(limits) for flag in FLAGS if flag.name == name)


def _example_steps(limits: LimitsSettings) -> int:
    return min(max(28, limits.min_steps), limits.max_steps)


def _example(name: SettingName) -> str:
    examples = {
        SettingName.ASPECT: "16:9",
        SettingName.STEPS: "28",
        SettingName.IMAGES: "1",
        SettingName.NEGATIVE: "text, watermark",
        SettingName.STYLE: "watercolor",
        SettingName.PROGRESS: "off",
    }
    return examples[name]


def _whole(name: SettingName, value: str) -> int:
    if _INTEGER.fullmatch(value) is None:
        raise InvalidRequest(
            f'{_LABELS[name]} must be a whole number, e.g. /settings {name} {_example(name)} (got "{value}").'
        )
    return int(value)


def _on_off(word: str) -> bool:
    if word in _TRUE or word == DEFAULT:
        return True
    if word in _FALSE:
        return False
    raise InvalidRequest(f'Progress updates are "on" or "off", e.g. /settings progress off (got "{word}").')
