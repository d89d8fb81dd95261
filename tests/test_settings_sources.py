"""Settings through pydantic-settings: each environment variable as declared on its field, errors
that name the setting and the layer it came from, and nothing read that was not declared."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.config import ConfigError, DaemonSettings, env_names, load_settings

BASE = {"SWARM_NAME": "team", "SWARM_DIR": "."}


def test_every_daemon_setting_has_its_own_declared_environment_variable() -> None:
    names = env_names()
    assert set(names) == set(DaemonSettings.model_fields)
    assert len(set(names.values())) == len(names), "two settings share a variable"
    assert names["swarm"] == "SWARM_NAME" and names["key"] == "SWARM_KEY"
    assert all(env.startswith("SWARM_") for env in names.values())


@pytest.mark.parametrize(
    ("layer", "source"),
    [("flag", "--debounce-ms"), ("env", "$SWARM_DEBOUNCE_MS"), ("toml", "swarm.toml")],
)
def test_a_bad_value_names_the_setting_and_its_layer(
    tmp_path: Path, layer: str, source: str
) -> None:
    config = tmp_path / "swarm.toml"
    config.write_text("[swarm]\ndebounce_ms = -1\n" if layer == "toml" else "", encoding="utf-8")
    environ = {**BASE, "SWARM_DEBOUNCE_MS": "-1"} if layer == "env" else BASE
    flags = {"debounce_ms": -1} if layer == "flag" else {}
    with pytest.raises(ConfigError) as raised:
        load_settings(DaemonSettings, flags, config_file=config, environ=environ)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("invalid setting 'debounce_ms' (from ") and source in message


def test_a_bad_value_under_a_higher_layer_is_never_used(tmp_path: Path) -> None:
    config = tmp_path / "swarm.toml"
    config.write_text('[swarm]\nheartbeat_interval = "often"\n', encoding="utf-8")
    environ = {**BASE, "SWARM_HEARTBEAT_INTERVAL": "also bad"}
    settings = load_settings(
        DaemonSettings, {"heartbeat_interval": 0.5}, config_file=config, environ=environ
    )
    assert settings.heartbeat_interval == 0.5


def test_only_the_declared_names_are_read_exactly_as_spelled() -> None:
    environ = {"swarm_name": "lower", "SWARM_SWARM": "field-name", "NODE": "x", "DIR": "/"}
    missing = "missing setting 'swarm': pass --swarm or set SWARM_NAME"
    with pytest.raises(ConfigError, match=missing):
        load_settings(DaemonSettings, {"dir": Path(".")}, environ=environ)
    settings = load_settings(DaemonSettings, {}, environ={**environ, **BASE})
    assert settings.node is None and settings.dir == Path(".")


def test_lists_in_the_environment_are_comma_separated() -> None:
    environ = {**BASE, "SWARM_INCLUDE": "*.md, notes/*.txt,", "SWARM_PRIVATE": ""}
    settings = load_settings(DaemonSettings, {}, environ=environ)
    assert settings.include == ("*.md", "notes/*.txt")
    assert settings.private == ()


def test_unknown_names_in_the_config_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "swarm.toml"
    config.write_text("[swarm]\nheartbeat = 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"unknown setting 'heartbeat' \\(from {config}\\)"):
        load_settings(DaemonSettings, {}, config_file=config, environ=BASE)


def test_settings_built_in_code_read_nothing_from_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWARM_ROLE", "from-env")
    assert DaemonSettings(swarm="team", dir=Path(".")).role == ""
    assert load_settings(DaemonSettings, {}, environ={**BASE}).role == ""
    monkeypatch.setenv("SWARM_NAME", "team")
    monkeypatch.setenv("SWARM_DIR", ".")
    assert load_settings(DaemonSettings, {}).role == "from-env"


def test_flags_beat_the_environment_which_beats_the_toml_file(tmp_path: Path) -> None:
    """All three layers at once, each setting given in a different set of them."""
    config = tmp_path / "swarm.toml"
    config.write_text(
        "[swarm]\n"
        'swarm = "from-toml"\n'
        'role = "from-toml"\n'
        "debounce_ms = 11\n"
        "heartbeat_interval = 3.0\n",
        encoding="utf-8",
    )
    environ = {
        "SWARM_DIR": ".",
        "SWARM_NAME": "from-env",
        "SWARM_ROLE": "from-env",
        "SWARM_DEBOUNCE_MS": "22",
        "SWARM_LOG_LEVEL": "warning",
    }
    flags = {"swarm": "from-flag", "debounce_ms": 33, "role": None, "node": None}
    settings = load_settings(DaemonSettings, flags, config_file=config, environ=environ)
    assert settings.swarm == "from-flag"  # flag, environment and file: the flag
    assert settings.debounce_ms == 33
    assert settings.role == "from-env"  # environment and file (the flag not given): the env
    assert settings.log_level == "warning"  # environment only
    assert settings.heartbeat_interval == 3.0  # file only
    assert settings.node is None  # nowhere: the default
