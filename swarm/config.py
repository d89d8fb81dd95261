"""Settings of the daemon and the CLI: flags win over the environment, which wins over a TOML file.

pydantic-settings layers the three sources in that declared order (`settings_customise_sources`)
and one pydantic model validates the result, so a bad value anywhere is a one-line error that
names the setting and where it came from. Each setting's environment variable is declared on its
field (`setting("SWARM_...")`), so users and compose files can grep for them; `env_names()` lists
them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from swarm import defaults
from swarm.transport.redis_keys import SwarmNameError, check_swarm_name
from swarm.transport.topology import is_sentinel_url, parse_sentinel_url

SettingsT = TypeVar("SettingsT", bound="Settings")
DEFAULT_HTTP = "127.0.0.1:8732"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONFIG_ENV = "SWARM_CONFIG"  # the TOML file, when --config is not given
_LIST_SEPARATOR = ","  # list settings in the environment: SWARM_INCLUDE="*.md,*.txt"


def setting(env: str, default: Any = ..., **constraints: Any) -> Any:
    """A settings field read from the environment variable `env` (and from flags and TOML by its
    own name)."""
    return Field(default, json_schema_extra={"env": env}, **constraints)


def env_name(field: FieldInfo) -> str | None:
    extra = field.json_schema_extra
    name = extra.get("env") if isinstance(extra, dict) else None
    return name if isinstance(name, str) else None


def env_names(model: type[BaseSettings] | None = None) -> dict[str, str]:
    """Setting -> its environment variable (of the daemon's settings by default)."""
    model = model or DaemonSettings
    return {
        name: env
        for name, field in model.model_fields.items()
        if (env := env_name(field)) is not None
    }


@dataclass(frozen=True)
class _Inputs:
    environ: Mapping[str, str]
    toml: dict[str, Any]


# What `load_settings` hands the sources of one load. Unset (a model built in code, as tests
# and `agent_settings` do): the given values and the defaults, nothing from outside.
_INPUTS: ContextVar[_Inputs | None] = ContextVar("swarm_settings_inputs", default=None)


class _Environment(EnvSettingsSource):
    """The environment variables declared on the fields, exactly as named; lists are comma
    separated (not JSON)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._environ)

    def _extract_field_info(
        self, field: FieldInfo, field_name: str, model_config: Any = None
    ) -> list[tuple[str, str, bool]]:
        env = env_name(field)
        return [] if env is None else [(field_name, env, False)]

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        return [item.strip() for item in str(value).split(_LIST_SEPARATOR) if item.strip()]


class Settings(BaseSettings):
    """Settings of any command: the sources and their order."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, validate_default=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (the init values) > environment > TOML file; no .env file, no secrets folder."""
        inputs = _INPUTS.get()
        if inputs is None:
            return (init_settings,)
        return (
            init_settings,
            _Environment(settings_cls, inputs.environ),
            InitSettingsSource(settings_cls, init_kwargs=inputs.toml),
        )


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming it."""


class SwarmSettings(Settings):
    """Settings shared by every command that talks to a swarm."""

    swarm: str = setting("SWARM_NAME")
    redis_url: str = setting("SWARM_REDIS_URL", DEFAULT_REDIS_URL)
    # The swarm key: a file, or base64 text in $SWARM_KEY (no flag: argv is visible to everyone).
    key_file: Path | None = setting("SWARM_KEY_FILE", None)
    key: SecretStr | None = setting("SWARM_KEY", None)
    encrypt: bool = setting("SWARM_ENCRYPT", True)  # with a key: False authenticates only
    redis_username: str | None = setting("SWARM_REDIS_USERNAME", None, min_length=1)
    # Or in the URL; no flag, like the key.
    redis_password: SecretStr | None = setting("SWARM_REDIS_PASSWORD", None)
    # CA bundle that signs the server's cert (rediss://).
    redis_ca_file: Path | None = setting("SWARM_REDIS_CA_FILE", None)
    # The sentinels' own password (redis+sentinel:// URLs); the URL's password is the master's.
    sentinel_password: SecretStr | None = setting("SWARM_SENTINEL_PASSWORD", None)
    # Wait after each publish for this many replicas to confirm it (WAIT), up to redis_wait_ms:
    # fewer edits for a failover to lose and re-send; off by default, nothing depends on it.
    redis_wait_replicas: int = setting("SWARM_REDIS_WAIT_REPLICAS", 0, ge=0, le=16)
    redis_wait_ms: int = setting("SWARM_REDIS_WAIT_MS", 200, ge=1, le=10_000)

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
        if not re.match(r"^(redis|rediss|unix|redis\+sentinel)://", value):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
        if is_sentinel_url(value):
            parse_sentinel_url(value)  # its ValueError names what is wrong, in one line
        return value

    @model_validator(mode="after")
    def _security(self) -> SwarmSettings:
        if self.key_file is not None and self.key is not None:
            raise ValueError("key_file and SWARM_KEY are both set: use one")
        if self.redis_ca_file is not None and not self.redis_url.startswith("rediss://"):
            raise ValueError("redis_ca_file needs a rediss:// (TLS) redis_url")
        return self


class DaemonSettings(SwarmSettings):
    dir: Path = setting("SWARM_DIR")
    node: str | None = setting(
        "SWARM_NODE", None, min_length=1, max_length=128, pattern=r"^[^\s]+$"
    )
    role: str = setting("SWARM_ROLE", "", max_length=64)
    state_dir: Path | None = setting("SWARM_STATE_DIR", None)
    http: str = setting("SWARM_HTTP", DEFAULT_HTTP)
    debounce_ms: int = setting("SWARM_DEBOUNCE_MS", defaults.DEBOUNCE_MS, ge=0, le=10_000)
    max_file_bytes: int = setting(
        "SWARM_MAX_FILE_BYTES", defaults.MAX_FILE_BYTES, ge=1, le=64 * 2**20
    )
    include: tuple[str, ...] = setting("SWARM_INCLUDE", defaults.INCLUDE)
    ignore: tuple[str, ...] = setting("SWARM_IGNORE", ())
    private: tuple[str, ...] = setting("SWARM_PRIVATE", defaults.PRIVATE)
    delete_guard_share: float = setting(
        "SWARM_DELETE_GUARD_SHARE", defaults.DELETE_GUARD_SHARE, gt=0, le=1
    )
    # The new-file budget (swarm/flood.py): more new files, or MB of them, within a minute held.
    new_files_per_minute: int = setting(
        "SWARM_NEW_FILES_PER_MINUTE", defaults.NEW_FILES_PER_MINUTE, ge=1, le=10**6
    )
    new_mb_per_minute: float = setting(
        "SWARM_NEW_MB_PER_MINUTE", defaults.NEW_MB_PER_MINUTE, gt=0, le=10**5
    )
    # Guarded files (swarm/protect/): only the listed writers ("NODE:PUBLIC_KEY", as `swarm
    # keygen --node` prints) may change them; no writers, no guard.
    protect: tuple[str, ...] = setting(
        "SWARM_PROTECT", ("SOUL.md", "IDENTITY.md", "AGENTS.md", "soul.json", "safety/**")
    )
    writers: tuple[str, ...] = setting("SWARM_WRITERS", ())
    heartbeat_interval: float = setting("SWARM_HEARTBEAT_INTERVAL", 1.0, gt=0, le=60)
    offline_after: float = setting("SWARM_OFFLINE_AFTER", 5.0, gt=0, le=3600)
    grace: float = setting("SWARM_GRACE", 5.0, ge=0, le=300)
    log_json: bool = setting("SWARM_LOG_JSON", False)
    log_level: str = setting("SWARM_LOG_LEVEL", "info", pattern=r"^(?i)(debug|info|warning|error)$")

    @field_validator("http")
    @classmethod
    def _http(cls, value: str) -> str:
        if value == "0":
            return value
        parse_http(value)
        return value

    @field_validator("writers")
    @classmethod
    def _writers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from swarm.protect.keys import parse_writer

        for entry in value:
            parse_writer(entry)  # a WriterKeyError is a ValueError: one line naming the entry
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

    dir: Path | None = setting("SWARM_DIR", None)  # type: ignore[assignment]


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
    environ: Mapping[str, str] | None = None,
) -> SettingsT:
    """The settings from flags (None: not given), the environment and the TOML file (`--config`,
    else $SWARM_CONFIG), in that order of precedence, validated; ConfigError in one line."""
    environ = os.environ if environ is None else environ
    config_path = config_file or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    toml = _read_toml(config_path) if config_path is not None else {}
    given = {key: value for key, value in flags.items() if value is not None and value != ()}
    sources = _Sources(model, given, environ, toml, config_path)
    if model.model_config.get("extra") == "forbid":
        unknown = sorted(set(toml) - set(model.model_fields))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} (from {config_path})")
    token = _INPUTS.set(_Inputs(environ, toml))
    try:
        return model(**given)
    except ValidationError as exc:
        raise sources.error(exc) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
    finally:
        _INPUTS.reset(token)


@dataclass(frozen=True)
class _Sources:
    """Where each value of one load came from, for the error message (the same precedence)."""

    model: type[BaseSettings]
    flags: dict[str, Any]
    environ: Mapping[str, str]
    toml: dict[str, Any]
    config_path: Path | None

    def where(self, name: str) -> str | None:
        field = self.model.model_fields.get(name)
        env = env_name(field) if field is not None else None
        if name in self.flags:
            return "--" + name.replace("_", "-")
        if env is not None and env in self.environ:
            return f"${env}"
        if name in self.toml:
            return str(self.config_path)
        return None

    def error(self, exc: ValidationError) -> ConfigError:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        where = self.where(str(error["loc"][0])) if error["loc"] else None
        if error["type"] == "missing":
            field = self.model.model_fields.get(name)
            env = env_name(field) if field is not None else None
            flag = "--" + name.replace("_", "-")
            return ConfigError(
                f"missing setting {name!r}: pass {flag}" + (f" or set {env}" if env else "")
            )
        message = error["msg"].removeprefix("Value error, ")
        hint = f" (from {where})" if where else ""
        return ConfigError(f"invalid setting {name!r}{hint}: {message}")


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
