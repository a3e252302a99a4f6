"""Jobs made from other jobs' pictures or from a user's image: Vary (Subtle/Strong), Upscale 2x, image
prompts, and several images per prompt. Pure rules: the source job (already read) and the settings in,
the exact `NewJob` (or a friendly refusal) out; `BotService` reads, writes and answers.

- Vary: the same prompt, size and steps on image i of a finished job, a new seed, the subtle or strong
  denoising strength; as many images as the source job made.
- Upscale: image i enlarged to twice its size (scaled down to fit the size limits and engine.max_pixels;
  refused when that is no larger), redrawn at the upscale strength with that image's own seed.
- Image prompts: the checked image, drawn at its aspect ratio unless a size was asked for.
"""

from __future__ import annotations

import dataclasses

from bot.command_parser import ImagineArgs, check_args, fit_to_limits
from bot.errors import InvalidRequest, NothingToDo
from bot.input_images import CheckedImage, size_for_image
from bot.request_rules import random_seed
from bot.settings import LimitsSettings, VariationsSettings
from bot.texts import expired_text
from engine.messages import SEED_SPACE
from storage.jobs import ImageRequest, Job, JobOrigin, JobStatus, NewJob, Requester, StoredImage

MIN_STRENGTH = 0.1
MAX_STRENGTH = 1.0
UPSCALE_FACTOR = 2


def check_strength(strength: float) -> float:
    """An image prompt's --strength: 0.1 (stay close to the image) to 1.0 (ignore it)."""
    if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        raise InvalidRequest(
            f"--strength {strength:g} is out of range: use a number from {MIN_STRENGTH:g} (stay close to "
            f"the image) to {MAX_STRENGTH:g} (use only its idea), e.g. --strength 0.6."
        )
    return strength


def check_count(count: int | None, limits: LimitsSettings) -> int:
    """--n: how many images one /imagine makes (the configured default when not given)."""
    if count is None:
        return limits.default_images
    if not 1 <= count <= limits.max_images:
        raise InvalidRequest(
            f"--n {count} is out of range: ask for 1 to {limits.max_images} images, "
            f"e.g. --n {limits.max_images}."
        )
    return count


def image_prompt_args(args: ImagineArgs, image: CheckedImage, limits: LimitsSettings) -> ImagineArgs:
    """An image prompt's arguments: the asked size, or the image's aspect ratio near one megapixel."""
    if args.width is not None and args.height is not None:
        return args
    width, height = size_for_image(image.width, image.height, limits)
    return check_args(dataclasses.replace(args, width=width, height=height), limits)


def source_image(source: Job, index: int, action: str) -> StoredImage:
    """Image `index` of a finished job, or why there is none to `action` (vary, upscale)."""
    if source.status is not JobStatus.DONE:
        if source.is_final:
            raise NothingToDo(f"Job #{source.id} has no picture to {action}: it {source.status.value}.")
        raise NothingToDo(
            f"Job #{source.id} is {source.status.value}; {action} it once its picture is posted."
        )
    if not source.images:
        raise NothingToDo(expired_text(source.id))
    if not 0 <= index < len(source.images):
        raise InvalidRequest(
            f"Job #{source.id} has {len(source.images)} image(s); pick one from 1 to {len(source.images)}."
        )
    return source.images[index]


def vary_job(
    requester: Requester,
    source: Job,
    index: int,
    input_png: bytes,
    *,
    strong: bool,
    variations: VariationsSettings,
    limits: LimitsSettings,
) -> NewJob:
    """Vary (Subtle or Strong) of image `index` of `source` (read with `source_image` first)."""
    old = source.request
    # Limits may have tightened since the source job ran: check it as if it were typed now.
    args = check_args(_args_of(old, old.width, old.height), limits)
    request = ImageRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        seed=random_seed(),
        steps=old.steps,
        width=old.width,
        height=old.height,
        guidance=old.guidance,
        count=min(old.count, limits.max_images),
        strength=variations.strong_strength if strong else variations.subtle_strength,
    )
    kind = "strong" if strong else "subtle"
    return NewJob(
        requester=requester,
        request=request,
        parent_id=source.id,
        origin=JobOrigin.VARY_STRONG if strong else JobOrigin.VARY_SUBTLE,
        parent_image_index=index,
        input_png=input_png,
        dedupe_key=f"vary-{kind}:{source.id}:{index}:{requester.user_id}",
    )


def upscale_size(width: int, height: int, limits: LimitsSettings, engine_max_pixels: int) -> tuple[int, int]:
    """Twice the size, scaled down to fit the size limits and what the engine keeps memory for."""
    capped = limits.model_copy(update={"max_pixels": min(limits.max_pixels, engine_max_pixels)})
    return fit_to_limits(width * UPSCALE_FACTOR, height * UPSCALE_FACTOR, capped)


def upscale_job(
    requester: Requester,
    source: Job,
    index: int,
    input_png: bytes,
    *,
    variations: VariationsSettings,
    limits: LimitsSettings,
    engine_max_pixels: int,
) -> NewJob:
    """Upscale 2x of image `index` of `source`; refused when the limits leave no room to grow."""
    old = source.request
    width, height = upscale_size(old.width, old.height, limits, engine_max_pixels)
    if width * height <= old.width * old.height:
        largest = min(limits.max_pixels, engine_max_pixels)
        raise NothingToDo(
            f"Job #{source.id}'s picture is {old.width}x{old.height}, already as large as this bot makes "
            f"them (at most {limits.max_side} px a side and {largest:,} pixels); it cannot be upscaled."
        )
    args = check_args(_args_of(old, width, height), limits)
    request = ImageRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        seed=(old.seed + index) % SEED_SPACE,  # the image's own seed: the same noise, at twice the size
        steps=old.steps,
        width=width,
        height=height,
        guidance=old.guidance,
        count=1,
        strength=variations.upscale_strength,
    )
    return NewJob(
        requester=requester,
        request=request,
        parent_id=source.id,
        origin=JobOrigin.UPSCALE,
        parent_image_index=index,
        input_png=input_png,
        dedupe_key=f"upscale:{source.id}:{index}:{requester.user_id}",
    )


def _args_of(old: ImageRequest, width: int, height: int) -> ImagineArgs:
    return ImagineArgs(
        prompt=old.prompt,
        negative_prompt=old.negative_prompt,
        steps=old.steps,
        width=width,
        height=height,
    )
