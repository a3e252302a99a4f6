"""Parsing `/imagine` text: the prompt with `--seed`, `--steps`, `--ar`, `--size`, `--no` flags.

CONTRACT (the bot-core helper implements). Both adapters feed it raw text; Discord also passes its
typed options through `ImagineArgs` fields directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import LimitsSettings

ASPECT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
MAX_SEED = 2**32 - 1


@dataclass(frozen=True, slots=True)
class ImagineArgs:
    """What the user asked for; None means "use the default"."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None


def parse_imagine(text: str, limits: LimitsSettings) -> ImagineArgs:
    """Split flags from the prompt and check them; raise InvalidRequest with how to write it."""
    raise NotImplementedError


def size_for_aspect(aspect: str) -> tuple[int, int]:
    """Multiples of 16 near one megapixel (1:1 -> 1024x1024); raise InvalidRequest if unknown."""
    raise NotImplementedError
