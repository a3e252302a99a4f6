"""From parsed arguments to the exact request: defaults filled, and always inside the limits."""

from __future__ import annotations

from bot.command_parser import ImagineArgs
from bot.request_rules import resolve_request
from bot.settings import LimitsSettings
from engine.settings import EngineSettings


def test_defaults_come_from_the_engine_settings() -> None:
    request = resolve_request(
        ImagineArgs(prompt="a fox"), LimitsSettings(), EngineSettings(default_steps=12, default_guidance=4.0)
    )
    assert (request.width, request.height, request.steps, request.guidance) == (1024, 1024, 12, 4.0)
    assert 0 <= request.seed < 2**32


def test_the_default_size_shrinks_to_fit_tight_limits() -> None:
    limits = LimitsSettings(min_side=64, max_side=256)
    request = resolve_request(ImagineArgs(prompt="a fox", seed=7), limits, EngineSettings())
    assert (request.width, request.height, request.seed) == (256, 256, 7)
    small_area = LimitsSettings(min_side=64, max_pixels=512 * 512)
    request = resolve_request(ImagineArgs(prompt="a fox"), small_area, EngineSettings())
    assert (request.width, request.height) == (512, 512)
