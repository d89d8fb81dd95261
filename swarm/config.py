"""Settings of the daemon and the CLI: flags win over the environment, which wins over a TOML file.

One pydantic model validates the merged values, so a bad value anywhere is a one-line error that
names the setting and where it came from.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from swarm.transport.redis_keys import SwarmNameError, check_swarm_name

SettingsT = TypeVar("SettingsT", bound="SwarmSettings")
DEFAULT_HTTP = "127.0.0.1:8732"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Setting -> environment variable. Explicit, so users (and compose files) can grep for them.
ENV_NAMES: dict[str, str] = {
    "dir": "SWARM_DIR",
    "swarm": "SWARM_NAME",
    "node": "SWARM_NODE",
    "redis_url": "SWARM_REDIS_URL",
    "role": "SWARM_ROLE",
    "state_dir": "SWARM_STATE_DIR",
    "http": "SWARM_HTTP",
    "debounce_ms": "SWARM_DEBOUNCE_MS",
    "max_file_bytes": "SWARM_MAX_FILE_BYTES",
    "include": "SWARM_INCLUDE",
    "ignore": "SWARM_IGNORE",
    "private": "SWARM_PRIVATE",
    "delete_guard_share": "SWARM_DELETE_GUARD_SHARE",
    "heartbeat_interval": "SWARM_HEARTBEAT_INTERVAL",
    "offline_after": "SWARM_OFFLINE_AFTER",
    "grace": "SWARM_GRACE",
    "log_json": "SWARM_LOG_JSON",
    "log_level": "SWARM_LOG_LEVEL",
    "key_file": "SWARM_KEY_FILE",
    "key": "SWARM_KEY",
    "encrypt": "SWARM_ENCRYPT",
    "redis_username": "SWARM_REDIS_USERNAME",
    "redis_password": "SWARM_REDIS_PASSWORD",
    "redis_ca_file": "SWARM_REDIS_CA_FILE",
}
CONFIG_ENV = "SWARM_CONFIG"
_LIST_SETTINGS = {"include", "ignore", "private"}


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming it."""


class SwarmSettings(BaseModel):
    """Settings shared by every command that talks to a swarm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    swarm: str
    redis_url: str = DEFAULT_REDIS_URL
    # The swarm key: a file, or base64 text in $SWARM_KEY (no flag: argv is visible to everyone).
    key_file: Path | None = None
    key: SecretStr | None = None
    encrypt: bool = True  # with a key: False authenticates without encrypting
    redis_username: str | None = Field(default=None, min_length=1)
    redis_password: SecretStr | None = None  # or in the URL; no flag, like the key
    redis_ca_file: Path | None = None  # CA bundle that signs the server's cert (rediss://)

    @field_validator("swarm")
    @classmethod
    def _swarm_name(cls, value: str) -> str:
        try:
            return check_swarm_name(value)
        except SwarmNameError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", value):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _security(self) -> SwarmSettings:
        if self.key_file is not None and self.key is not None:
            raise ValueError("key_file and SWARM_KEY are both set: use one")
        if self.redis_ca_file is not None and not self.redis_url.startswith("rediss://"):
            raise ValueError("redis_ca_file needs a rediss:// (TLS) redis_url")
        return self


class DaemonSettings(SwarmSettings):
    dir: Path
    node: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^\s]+$")
    role: str = Field(default="", max_length=64)
    state_dir: Path | None = None
    http: str = DEFAULT_HTTP
    debounce_ms: int = Field(default=30, ge=0, le=10_000)
    max_file_bytes: int = Field(default=4 * 1024 * 1024, ge=1, le=64 * 1024 * 1024)
    include: tuple[str, ...] = ("*.md",)
    ignore: tuple[str, ...] = ()
    private: tuple[str, ...] = ("memory/private/", "*.private.md")
    delete_guard_share: float = Field(default=0.5, gt=0, le=1)
    heartbeat_interval: float = Field(default=1.0, gt=0, le=60)
    offline_after: float = Field(default=5.0, gt=0, le=3600)
    grace: float = Field(default=5.0, ge=0, le=300)
    log_json: bool = False
    log_level: str = Field(default="info", pattern=r"^(?i)(debug|info|warning|error)$")

    @field_validator("http")
    @classmethod
    def _http(cls, value: str) -> str:
        if value == "0":
            return value
        parse_http(value)
        return value

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.dir / ".swarm"

    @property
    def http_address(self) -> tuple[str, int] | None:
        return None if self.http == "0" else parse_http(self.http)


class StatusSettings(DaemonSettings):
    """`swarm status` reads the daemon's settings (so one config file or environment serves
    both) but needs only the swarm and Redis: the memory folder is optional."""

    dir: Path | None = None  # type: ignore[assignment]


def parse_http(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT or 0, got {value!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def load_settings(
    model: type[SettingsT],
    flags: dict[str, Any],
    *,
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
) -> SettingsT:
    """Merge TOML file < environment < flags (None flags are unset) and validate."""
    environ = dict(os.environ) if environ is None else environ
    sources: dict[str, str] = {}
    values: dict[str, Any] = {}
    config_path = config_file or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    if config_path is not None:
        for key, value in _read_toml(config_path).items():
            values[key] = value
            sources[key] = f"{config_path}"
    for key, env_name in ENV_NAMES.items():
        if key in model.model_fields and env_name in environ:
            raw = environ[env_name]
            values[key] = _split_list(raw) if key in _LIST_SETTINGS else raw
            sources[key] = f"${env_name}"
    for key, value in flags.items():
        if value is not None and value != ():
            values[key] = value
            sources[key] = "--" + key.replace("_", "-")
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        where = sources.get(unknown[0], "config")
        raise ConfigError(f"unknown setting {unknown[0]!r} (from {where})")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        where = sources.get(str(error["loc"][0]) if error["loc"] else "", "")
        hint = f" (from {where})" if where else ""
        if error["type"] == "missing":
            env = ENV_NAMES.get(name)
            flag = "--" + name.replace("_", "-")
            hint = f": pass {flag}" + (f" or set {env}" if env else "")
            raise ConfigError(f"missing setting {name!r}{hint}") from None
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid setting {name!r}{hint}: {message}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("swarm", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [swarm] must be a table")
    return {key.replace("-", "_"): value for key, value in section.items()}


def _split_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]
