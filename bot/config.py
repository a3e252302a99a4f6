"""The whole configuration: one typed model per section, loaded from TOML plus environment secrets.

Every package owns the settings of its own section; this module only composes them, reads the file,
and turns validation errors into lines an operator can act on
(``engine.default_steps: 0 is below the minimum 1``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from bot.metrics import MetricsSettings
from bot.settings import (
    DeliverySettings,
    DiscordSettings,
    LimitsSettings,
    ModerationSettings,
    TelegramSettings,
)
from engine.settings import EngineSettings
from storage.settings import StorageSettings

DEFAULT_CONFIG_PATH = Path("config.toml")
CONFIG_PATH_VARIABLE = "MAJICBOT_CONFIG"
SECRET_VARIABLES: Mapping[str, tuple[str, str]] = {
    "MAJICBOT_DISCORD_TOKEN": ("discord", "token"),
    "MAJICBOT_TELEGRAM_TOKEN": ("telegram", "token"),
}


class LoggingSettings(BaseModel):
    """The `[logging]` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = Field(
        default="text", description='"json": one JSON object per line, for log collectors.'
    )


class Config(BaseModel):
    """Everything majicbot reads from `config.toml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    storage: StorageSettings = Field(default_factory=StorageSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @property
    def discord_enabled(self) -> bool:
        return self.discord.token is not None

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram.token is not None


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
    for variable, (section, key) in SECRET_VARIABLES.items():
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


def masked_dump(config: Config) -> dict[str, Any]:
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
