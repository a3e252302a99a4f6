"""From what a user asked for to the exact request the engine runs: checks plus defaults.

`BotService.imagine` and `majicbot generate` both go through `resolve_request`, so a prompt gives the
same picture settings from a chat and from the command line.
"""

from __future__ import annotations

import secrets

from bot.command_parser import MAX_SEED, ImagineArgs, check_args, fit_to_limits
from bot.settings import LimitsSettings
from engine.settings import EngineSettings
from storage.jobs import ImageRequest

DEFAULT_SIZE = (1024, 1024)


def resolve_request(args: ImagineArgs, limits: LimitsSettings, engine: EngineSettings) -> ImageRequest:
    """Check `args` against the limits (InvalidRequest if wrong) and fill what is unset.

    Defaults: a random seed, `engine.default_steps`, 1024x1024 (scaled down to fit the limits) and
    `engine.default_guidance`.
    """
    args = check_args(args, limits)
    width, height = (
        (args.width, args.height)
        if args.width is not None and args.height is not None
        else fit_to_limits(*DEFAULT_SIZE, limits)
    )
    return ImageRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        seed=args.seed if args.seed is not None else random_seed(),
        steps=args.steps if args.steps is not None else engine.default_steps,
        width=width,
        height=height,
        guidance=engine.default_guidance,
    )


def random_seed() -> int:
    """A fresh seed from the whole 32-bit range the generator accepts."""
    return secrets.randbelow(MAX_SEED + 1)
