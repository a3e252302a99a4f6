"""The whole configuration: one typed model per section, loaded from TOML plus environment secrets.

Every package owns the settings of its own section, and every chat platform its section's model
(`bot/<platform>/settings.py`, declared in its `PlatformSpec`); this module only composes them (`Config`
has the core sections plus one per installed platform), reads the file, and turns validation errors into
lines an operator can act on (``engine.default_steps: 0 is below the minimum 1``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, create_model

from bot.metrics import MetricsSettings
from bot.platforms import PlatformError, PlatformSpec, installed
from bot.settings import (
    DeliverySettings,
    LimitsSettings,
    ModerationSettings,
    PlatformSettings,
    VariationsSettings,
)
from engine.settings import EngineSettings
from storage.jobs import Platform
from storage.settings import StorageSettings

DEFAULT_CONFIG_PATH = Path("config.toml")
CONFIG_PATH_VARIABLE = "MAJICBOT_CONFIG"

S = TypeVar("S", bound=PlatformSettings)


class LoggingSettings(BaseModel):
    """The `[logging]` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = Field(
        default="text", description='"json": one JSON object per line, for log collectors.'
    )


class CoreConfig(BaseModel):
    """The sections every installation has; `Config` adds one per platform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    platforms: ClassVar[tuple[PlatformSpec[Any], ...]] = ()
    """The platforms whose sections this model has (`compose_config`)."""

    storage: StorageSettings = Field(default_factory=StorageSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    variations: VariationsSettings = Field(default_factory=VariationsSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    def section(self, platform: PlatformSpec[S]) -> S:
        """The `[name]` section of `platform`."""
        value = getattr(self, platform.name)
        if not isinstance(value, platform.settings):
            raise TypeError(f"the config has no {platform.name} section of {platform.settings.__name__}")
        return value

    def sections(self) -> dict[Platform, PlatformSettings]:
        """Every platform's section, by name (enabled or not)."""
        return {platform.name: self.section(platform) for platform in self.platforms}

    def enabled_platforms(self) -> tuple[PlatformSpec[Any], ...]:
        """The platforms whose adapter runs (their token is set)."""
        return tuple(platform for platform in self.platforms if self.section(platform).enabled)

    def secrets(self) -> list[str]:
        """Every secret in the configuration (the platforms' tokens and the like), for log scrubbing."""
        return [secret for section in self.sections().values() for secret in section.secrets()]


def compose_config(platforms: Sequence[PlatformSpec[Any]]) -> type[CoreConfig]:
    """The configuration model with one section per platform, named after it."""
    taken = [platform.name for platform in platforms if platform.name in CoreConfig.model_fields]
    if taken:
        raise PlatformError(f"a platform cannot be named like a core config section: {', '.join(taken)}")
    sections: dict[str, Any] = {
        platform.name: (platform.settings, Field(default_factory=platform.settings)) for platform in platforms
    }
    model = create_model(
        "Config",
        __base__=CoreConfig,
        __module__=__name__,
        __doc__="Everything majicbot reads from `config.toml`: the core sections and one per platform.",
        **sections,
    )
    model.platforms = tuple(platforms)
    return model


if TYPE_CHECKING:
    Config: TypeAlias = CoreConfig
else:
    Config = compose_config(installed())


def secret_variables(config_model: type[CoreConfig]) -> Mapping[str, tuple[str, str]]:
    """Environment variable -> (section, key) it sets: each platform's token."""
    return {platform.token_variable: (platform.name, "token") for platform in config_model.platforms}


class ConfigError(Exception):
    """The configuration cannot be used; `problems` has one line per wrong key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}:\n" + "\n".join(f"  {line}" for line in problems))


def resolve_config_path(explicit: Path | None, environ: Mapping[str, str] = os.environ) -> tuple[Path, bool]:
    """The file to read and whether someone asked for it (then it must exist)."""
    if explicit is not None:
        return explicit, True
    if environ.get(CONFIG_PATH_VARIABLE):
        return Path(environ[CONFIG_PATH_VARIABLE]), True
    return DEFAULT_CONFIG_PATH, False


def load_config(explicit: Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, merge environment secrets into, and validate the configuration."""
    path, required = resolve_config_path(explicit, environ)
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(str(path), [f"not valid TOML: {error}"]) from None
    elif required:
        raise ConfigError(str(path), ["file not found; copy config.example.toml to config.toml and edit it"])
    for variable, (section, key) in secret_variables(Config).items():
        value = environ.get(variable)
        if value:
            section_table = raw.setdefault(section, {})
            if not isinstance(section_table, dict):
                raise ConfigError(str(path), [f"{section}: expected a table, got {section_table!r}"])
            section_table[key] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(str(path), list(_describe(error))) from None


# pydantic's bound errors -> (how to say it, the context key holding the bound)
_BOUND_PHRASES: Mapping[str, tuple[str, str]] = {
    "greater_than_equal": ("is below the minimum", "ge"),
    "greater_than": ("must be greater than", "gt"),
    "less_than_equal": ("is above the maximum", "le"),
    "less_than": ("must be less than", "lt"),
    "literal_error": ("is not one of", "expected"),
}


def _describe(error: ValidationError) -> Iterator[str]:
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        value = item.get("input")
        if item["type"] == "extra_forbidden":
            yield f"{key}: unknown key (remove it, or check its spelling against config.example.toml)"
        elif item["type"] in _BOUND_PHRASES:
            phrase, bound = _BOUND_PHRASES[item["type"]]
            yield f"{key}: {value!r} {phrase} {(item.get('ctx') or {})[bound]}"
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            yield f"{key}: {message}{shown}"


def masked_dump(config: CoreConfig) -> dict[str, Any]:
    """The effective configuration as plain data, with every secret replaced by a mask."""

    def mask(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "********" if value.get_secret_value() else ""
        if isinstance(value, BaseModel):
            return {name: mask(getattr(value, name)) for name in type(value).model_fields}
        if isinstance(value, tuple | list):
            return [mask(item) for item in value]
        if isinstance(value, Path):
            return str(value)
        return value

    dumped = mask(config)
    assert isinstance(dumped, dict)
    return dumped
