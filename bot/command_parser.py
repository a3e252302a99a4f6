"""Parsing `/imagine` text: the prompt with `--seed`, `--steps`, `--ar`, `--size`, `--no`, `--n` and
`--strength` flags.

Both adapters feed it raw text; Discord also passes its typed options through `ImagineArgs` fields
directly (`with_options` merges them with flags written in the prompt, and `check_args` validates
arguments that did not come through `parse_imagine`).

The language::

    /imagine <prompt> [--seed N] [--steps N] [--ar W:H | --size WxH] [--no <negative prompt>]
             [--n 1..4] [--strength 0.1..1.0]

Flags may stand anywhere after the start of the prompt; words that belong to no flag are the prompt.
``--no`` takes every word up to the next flag. ``--flag=value`` works too. Phones turn ``--`` into an
em dash (``—seed``) or an en dash (``–seed``): both are read as ``--``.

Aspect ratios map to sizes whose sides are multiples of 16 (what FLUX's latent patches need) near one
megapixel (what FLUX.1-dev was trained at):

    ======  ==========  ===========
    ratio   size        megapixels
    ======  ==========  ===========
    1:1     1024x1024   1.05
    16:9    1360x768    1.04 (1.771)
    9:16    768x1360    1.04
    4:3     1152x864    1.00
    3:4     864x1152    1.00
    3:2     1248x832    1.04
    2:3     832x1248    1.04
    ======  ==========  ===========

When the operator's limits are tighter than a table size, the size is scaled down to fit, keeping the
ratio and multiples of 16.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bot.errors import InvalidRequest
from bot.settings import LimitsSettings

ASPECT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
MAX_SEED = 2**32 - 1
MAX_JOB_ID = 2**53  # Discord's integer options stop here; far below the database's 64-bit ids
SIDE_MULTIPLE = 16

N = TypeVar("N", int, float)

_ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1360, 768),
    "9:16": (768, 1360),
    "4:3": (1152, 864),
    "3:4": (864, 1152),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
}


@dataclass(frozen=True, slots=True)
class Flag:
    """One `/imagine` flag: the parser accepts exactly these names, and /help is written from them."""

    name: str
    usage: str
    example: str
    explain: Callable[[LimitsSettings], str]  # one line for /help, with the operator's limits

    def help_line(self, limits: LimitsSettings) -> str:
        return f"{self.usage}: {self.explain(limits)}"


FLAGS: tuple[Flag, ...] = (
    Flag(
        "seed",
        "--seed N",
        "--seed 42",
        lambda limits: f"0 to {MAX_SEED}; the same seed and prompt give the same picture",
    ),
    Flag(
        "steps",
        "--steps N",
        "--steps 28",
        lambda limits: f"{limits.min_steps} to {limits.max_steps}; more steps, more detail, more time",
    ),
    Flag(
        "ar",
        "--ar W:H",
        "--ar 16:9",
        lambda limits: f"{', '.join(ASPECT_RATIOS[:-1])} or {ASPECT_RATIOS[-1]} (about one megapixel)",
    ),
    Flag(
        "size",
        "--size WxH",
        "--size 1024x768",
        lambda limits: (
            f"exact size in pixels, multiples of {SIDE_MULTIPLE}, sides {limits.min_side} to "
            f"{limits.max_side}, at most {limits.max_pixels / 1e6:.1f} megapixels"
        ),
    ),
    Flag(
        "no",
        "--no <things to leave out>",
        "--no text, watermark",
        lambda limits: (
            f"what to leave out of the picture (up to {limits.max_negative_prompt_length} characters; "
            "it takes every word up to the next flag)"
        ),
    ),
    Flag(
        "n",
        "--n N",
        "--n 4",
        lambda limits: (
            f"how many pictures to draw at once, 1 to {limits.max_images} "
            "(one job; each picture gets U and V buttons)"
        ),
    ),
    Flag(
        "strength",
        "--strength S",
        "--strength 0.6",
        lambda limits: "with a picture attached: 0.1 stays close to it, 1.0 keeps only its idea",
    ),
)
FLAG_USAGE: dict[str, str] = {flag.name: flag.usage for flag in FLAGS}
KNOWN_FLAGS = ", ".join(FLAG_USAGE.values())
EXAMPLE = "/imagine a red fox in the snow --ar 16:9 --seed 42"

# A flag is a word that starts with two hyphens (or the dash a phone made of them) and a letter;
# "--", "-- 5" or "a---b" stay part of the prompt.
_FLAG = re.compile(r"^(?:--|—|–)(?P<name>[A-Za-z][A-Za-z0-9_-]*)(?:=(?P<value>.*))?$", re.DOTALL)
_WORD = re.compile(r"\S+")
_INTEGER = re.compile(r"^-?[0-9]+$")  # int() would also take "1_000", " 7" and other digits
_SIZE = re.compile(r"^(?P<width>\d{1,6})\s*[xX×*]\s*(?P<height>\d{1,6})$")


@dataclass(frozen=True, slots=True)
class ImagineArgs:
    """What the user asked for. None (and "" for the negative prompt) means the flag was not given:
    the user's /settings fill those, then the operator's defaults (`UserSettings.apply`,
    `resolve_request`); a flag that was given always wins."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    count: int | None = None  # --n: how many images (checked by the service)
    strength: float | None = None  # --strength: how far from the attached image (checked by the service)


@dataclass(slots=True)
class _Flag:
    name: str
    values: list[str]


def parse_imagine(text: str, limits: LimitsSettings) -> ImagineArgs:
    """`read_imagine`, then checked against the limits (for callers that use the arguments themselves;
    `BotService.imagine` checks what it is given, so the chat adapters only read)."""
    return check_args(read_imagine(text, limits), limits)


def read_imagine(text: str, limits: LimitsSettings) -> ImagineArgs:
    """Split flags from the prompt and read their values (InvalidRequest, saying how to write one,
    for a flag that cannot be read); the limits are not checked here. `--ar` is sized to fit them."""
    prompt_words: list[str] = []
    flags: dict[str, _Flag] = {}
    current: _Flag | None = None
    for match in _WORD.finditer(text):
        word = match.group()
        flag = _read_flag(word)
        if flag is None:
            if current is not None and (current.name == "no" or not current.values):
                current.values.append(word)
            else:
                # Words after a one-value flag's value go back to the prompt: flags may sit anywhere.
                prompt_words.append(word)
            continue
        name, inline_value = flag
        if name in flags:
            raise InvalidRequest(f"--{name} is given twice; keep one ({FLAG_USAGE[name]}).")
        current = _Flag(name, [inline_value] if inline_value else [])
        flags[name] = current

    values = {name: " ".join(flag.values) for name, flag in flags.items()}
    for name, value in values.items():
        if not value:
            raise InvalidRequest(f"--{name} needs a value: write {FLAG_USAGE[name]}, e.g. {_example(name)}.")
    if "ar" in values and "size" in values:
        raise InvalidRequest("Use either --ar W:H or --size WxH, not both.")

    width: int | None = None
    height: int | None = None
    if "ar" in values:
        width, height = fit_to_limits(*size_for_aspect(values["ar"]), limits)
    elif "size" in values:
        width, height = _parse_size(values["size"])
    args = ImagineArgs(
        prompt=" ".join(prompt_words),
        negative_prompt=values.get("no", ""),
        seed=_parse_int("seed", values["seed"]) if "seed" in values else None,
        steps=_parse_int("steps", values["steps"]) if "steps" in values else None,
        width=width,
        height=height,
        count=_parse_int("n", values["n"]) if "n" in values else None,
        strength=_parse_strength(values["strength"]) if "strength" in values else None,
    )
    return args


def known_aspect(aspect: str) -> str | None:
    """The ratio as `ASPECT_RATIOS` writes it ("16/9", "16 : 9" -> "16:9"); None if it is not one."""
    normalized = re.sub(r"\s+", "", aspect).replace("/", ":")
    return normalized if normalized in _ASPECT_SIZES else None


def size_for_aspect(aspect: str) -> tuple[int, int]:
    """Multiples of 16 near one megapixel (1:1 -> 1024x1024); raise InvalidRequest if unknown."""
    known = known_aspect(aspect)
    size = None if known is None else _ASPECT_SIZES[known]
    if size is None:
        raise InvalidRequest(
            f"--ar {aspect} is not a ratio I know. Use one of {', '.join(ASPECT_RATIOS)}, "
            "or give an exact size with --size WxH (e.g. --size 1152x896)."
        )
    return size


def fit_to_limits(width: int, height: int, limits: LimitsSettings) -> tuple[int, int]:
    """Scale a size down (keeping its ratio, sides multiples of 16) until it fits the limits."""
    scale = min(
        1.0,
        limits.max_side / max(width, height),
        (limits.max_pixels / (width * height)) ** 0.5,
    )
    if scale >= 1.0:
        return width, height
    return (
        max(SIDE_MULTIPLE, int(width * scale) // SIDE_MULTIPLE * SIDE_MULTIPLE),
        max(SIDE_MULTIPLE, int(height * scale) // SIDE_MULTIPLE * SIDE_MULTIPLE),
    )


def with_options(
    args: ImagineArgs,
    limits: LimitsSettings,
    *,
    seed: int | None = None,
    steps: int | None = None,
    aspect: str | None = None,
    negative_prompt: str | None = None,
    count: int | None = None,
    strength: float | None = None,
) -> ImagineArgs:
    """Merge typed command options (Discord's) into arguments parsed from the prompt text.

    An option and a flag for the same thing are fine when they agree; otherwise the user is asked to
    keep one, since silently preferring either would surprise someone. Not checked against the limits:
    `BotService.imagine` does that, once.
    """
    width, height = args.width, args.height
    if aspect is not None:
        size = fit_to_limits(*size_for_aspect(aspect), limits)
        if width is not None and (width, height) != size:
            raise InvalidRequest(
                f"The aspect option {aspect} and the size in the prompt ({width}x{height}) disagree; "
                "keep one."
            )
        width, height = size
    negative = args.negative_prompt
    if negative_prompt and negative_prompt.strip():
        if negative and negative != negative_prompt.strip():
            raise InvalidRequest("The negative option and --no in the prompt disagree; keep one.")
        negative = negative_prompt
    merged = ImagineArgs(
        prompt=args.prompt,
        negative_prompt=negative,
        seed=_merge("seed", args.seed, seed),
        steps=_merge("steps", args.steps, steps),
        width=width,
        height=height,
        count=_merge("n", args.count, count),
        strength=_merge("strength", args.strength, strength),
    )
    return merged


def check_args(args: ImagineArgs, limits: LimitsSettings) -> ImagineArgs:
    """Check arguments against the limits, whichever way they were written; return them tidied."""
    prompt = args.prompt.strip()
    if not prompt:
        raise InvalidRequest(f"Your prompt is empty. Write what to draw, e.g. {EXAMPLE}")
    if len(prompt) > limits.max_prompt_length:
        raise InvalidRequest(
            f"Your prompt is {len(prompt)} characters long; the limit is {limits.max_prompt_length}. "
            "Shorten it and try again."
        )
    negative = args.negative_prompt.strip()
    if len(negative) > limits.max_negative_prompt_length:
        raise InvalidRequest(
            f"The --no text is {len(negative)} characters long; the limit is "
            f"{limits.max_negative_prompt_length}. Shorten it and try again."
        )
    if args.seed is not None:
        check_seed(args.seed)
    if args.steps is not None and not limits.min_steps <= args.steps <= limits.max_steps:
        raise InvalidRequest(
            f"--steps {args.steps} is out of range: use a whole number from {limits.min_steps} "
            f"to {limits.max_steps}, e.g. {_example('steps')}."
        )
    if (args.width is None) != (args.height is None):
        raise InvalidRequest("Give both width and height, e.g. --size 1024x768.")
    if args.width is not None and args.height is not None:
        _check_size(args.width, args.height, limits)
    return dataclasses.replace(args, prompt=prompt, negative_prompt=negative)


def check_seed(seed: int) -> int:
    """A seed must fit in 32 bits, as the generator takes it."""
    if not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(
            f"--seed {seed} is out of range: use a whole number from 0 to {MAX_SEED}, e.g. --seed 42."
        )
    return seed


def check_job_id(job_id: int) -> int:
    """A job number a user typed or a button carried, before it reaches the database."""
    if not 1 <= job_id <= MAX_JOB_ID:
        raise InvalidRequest(
            f"Job #{job_id} is out of range: job numbers are whole numbers from 1 to {MAX_JOB_ID}, "
            "e.g. 42 (/history lists yours)."
        )
    return job_id


def _check_size(width: int, height: int, limits: LimitsSettings) -> None:
    if width % SIDE_MULTIPLE or height % SIDE_MULTIPLE:
        nearest_w, nearest_h = (_nearest_multiple(side) for side in (width, height))
        raise InvalidRequest(
            f"--size {width}x{height}: width and height must be multiples of 16; "
            f"the nearest is --size {nearest_w}x{nearest_h}."
        )
    if not (limits.min_side <= width <= limits.max_side and limits.min_side <= height <= limits.max_side):
        raise InvalidRequest(
            f"--size {width}x{height} is out of range: each side must be from {limits.min_side} "
            f"to {limits.max_side} pixels, e.g. --size 1024x768."
        )
    if width * height > limits.max_pixels:
        raise InvalidRequest(
            f"--size {width}x{height} is too large: width x height may be at most "
            f"{limits.max_pixels} pixels (e.g. --size 1024x1024)."
        )


def _nearest_multiple(side: int) -> int:
    # Halves round up (1000 -> 1008): the bigger picture is the likelier wish.
    return max(SIDE_MULTIPLE, (side + SIDE_MULTIPLE // 2) // SIDE_MULTIPLE * SIDE_MULTIPLE)


def _parse_int(name: str, value: str) -> int:
    if _INTEGER.match(value):
        return int(value)
    if name == "seed":
        raise InvalidRequest(
            f'--seed must be a whole number from 0 to {MAX_SEED}, e.g. --seed 42 (got "{value}").'
        )
    raise InvalidRequest(f'--{name} must be a whole number, e.g. {_example(name)} (got "{value}").')


def _parse_size(value: str) -> tuple[int, int]:
    match = _SIZE.match(value.strip())
    if match is None:
        raise InvalidRequest(
            f'--size must be written as WIDTHxHEIGHT in pixels, e.g. --size 1024x768 (got "{value}").'
        )
    return int(match.group("width")), int(match.group("height"))


def _parse_strength(value: str) -> float:
    try:
        strength = float(value)
    except ValueError:
        strength = math.nan
    if not math.isfinite(strength):
        raise InvalidRequest(
            f'--strength must be a number from 0.1 to 1.0, e.g. --strength 0.6 (got "{value}").'
        )
    return strength


def _merge(name: str, from_text: N | None, from_option: N | None) -> N | None:
    if from_option is None:
        return from_text
    if from_text is not None and from_text != from_option:
        raise InvalidRequest(
            f"The {name} option ({from_option}) and --{name} in the prompt ({from_text}) disagree; keep one."
        )
    return from_option


def _read_flag(word: str) -> tuple[str, str | None] | None:
    """(flag name, value written with "=") if the word is a flag; raise if it is an unknown one."""
    match = _FLAG.match(word)
    if match is None:
        return None
    name = match.group("name").lower()
    if name in FLAG_USAGE:
        return name, match.group("value")
    if not word.startswith("--"):
        # A dash in ordinary text ("a quote —Einstein") is prose, not a mistyped flag.
        return None
    raise InvalidRequest(_unknown_flag_message(match.group("name")))


def _unknown_flag_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), list(FLAG_USAGE), n=1, cutoff=0.5)
    hint = f" Did you mean --{close[0]}?" if close else ""
    return f"--{name} is not a flag I know.{hint} The flags are: {KNOWN_FLAGS}."


def _example(name: str) -> str:
    return next(flag.example for flag in FLAGS if flag.name == name)


def read_reroll_arguments(words: Sequence[str]) -> tuple[int | None, int | None]:
    """The words after a typed /reroll: none (a random seed), a seed, or a seed and a job id."""
    seed_words, job_words = words[:1], [word.lstrip("#") for word in words[1:]]
    if len(words) > 2 or not all(_INTEGER.match(word) for word in (*seed_words, *job_words)):
        raise InvalidRequest(
            "Write /reroll for a new random seed, or /reroll <seed> with a whole number "
            f"from 0 to {MAX_SEED}, e.g. /reroll 1234 (/reroll <seed> <job id> rerolls that job)."
        )
    seed = check_seed(int(words[0])) if words else None
    return seed, check_job_id(int(job_words[0])) if job_words else None


def read_job_argument(words: Sequence[str], command: str) -> int | None:
    """The words after a typed /cancel or /show: none or one job id ("42" or "#42")."""
    if not words:
        return None
    if len(words) > 1 or not _INTEGER.match(words[0].lstrip("#")):
        if command == "cancel":
            raise InvalidRequest(
                "Write /cancel to stop your newest job, or /cancel <job id>, e.g. /cancel 42."
            )
        raise InvalidRequest(f"Write /{command} <job id>, e.g. /{command} 42 (/history lists yours).")
    return check_job_id(int(words[0].lstrip("#")))
