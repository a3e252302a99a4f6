"""The chat platforms, each found in its own folder: adding one is adding `bot/<platform>/`, nothing else.

Every sub-package of `bot` with a `platform.py` module is a platform. That module is light (pydantic and
aiohttp at most, never the platform's own library) and defines `PLATFORM`, a `PlatformSpec`: the
platform's short name (its folder, its config section, the value stored in job rows), the settings
model of its section, the environment variable of its token, a factory of its `Frontend` (which imports
the platform's library, so it is called only when the platform is enabled) and its token check for
`majicbot doctor`. The configuration gets one section per platform (`bot.config`), and the CLI, the
doctor, the application and the moderation loop over the platforms; no other module names one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bot.settings import PlatformSettings
from bot.token_check import TokenVerdict
from storage.jobs import Platform

if TYPE_CHECKING:
    from bot.frontend import Frontend
    from bot.service import BotService
    from bot.settings import LimitsSettings

SPEC_MODULE = "platform"
"""The module of a platform's folder that declares it."""

MAX_NAME_LENGTH = 16  # the `platform` columns of storage's tables

S = TypeVar("S", bound=PlatformSettings)


@dataclass(frozen=True, slots=True)
class PlatformSpec(Generic[S]):
    """What the rest of the program knows about one chat platform."""

    name: Platform  # the folder's name: the `[name]` config section and the `platform` stored in jobs
    settings: type[S]  # the model of its config section (pydantic only)
    token_variable: str  # the environment variable that sets `token` (MAJICBOT_<NAME>_TOKEN)
    # The adapter; imports the platform's library, so it is called only when `settings.enabled`.
    frontend: Callable[[S, BotService, LimitsSettings], Frontend]
    check_token: Callable[[S], Awaitable[TokenVerdict]]  # `majicbot doctor`: is the token accepted?
    # Loggers of the platform's library that are chatty at INFO (quietened unless logging at DEBUG).
    noisy_loggers: tuple[str, ...] = ()


class PlatformError(Exception):
    """A platform folder does not declare itself as this module expects; the text says what to fix."""


def discover(package: str = "bot") -> tuple[PlatformSpec[Any], ...]:
    """The platforms declared by `<package>.<folder>.platform` modules, by name."""
    found: list[PlatformSpec[Any]] = []
    root = importlib.import_module(package)
    for folder in pkgutil.iter_modules(root.__path__):
        module_name = f"{package}.{folder.name}.{SPEC_MODULE}"
        if not folder.ispkg or importlib.util.find_spec(module_name) is None:
            continue
        spec = getattr(importlib.import_module(module_name), "PLATFORM", None)
        if not isinstance(spec, PlatformSpec):
            raise PlatformError(f"{module_name} must define PLATFORM = PlatformSpec(...)")
        if spec.name != folder.name:
            raise PlatformError(
                f"{module_name}: PLATFORM.name is {spec.name!r}; it must be its folder's name {folder.name!r}"
            )
        if not spec.name.isidentifier() or len(spec.name) > MAX_NAME_LENGTH:
            raise PlatformError(
                f"{module_name}: the name {spec.name!r} must be a Python identifier of at most "
                f"{MAX_NAME_LENGTH} characters (it is stored in every job row); rename the folder"
            )
        found.append(spec)
    return tuple(sorted(found, key=lambda spec: spec.name))


@functools.cache
def installed() -> tuple[PlatformSpec[Any], ...]:
    """The platforms of this installation (the folders in `bot/`), found once."""
    return discover()
