"""compose.yaml, checked without a Docker engine (the image itself: tests/test_image.py).

No Docker runs on the development machines, so this is how the compose topology is proven: the
file validates against the Compose Specification schema, and everything it names (build files,
scripts, ports, environment variables, CLI flags, dependency conditions) exists in the project
and matches what the daemon, the CLI and the demo agents actually accept. What a user runs after
`up` (`docker compose run --rm status`, a second `up`) must not re-run the demo.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from dockerfile import (
    APP_ROOT,
    DOCKERFILE,
    REPO,
    app_paths,
    copied_into_app,
    image_env,
    port_of,
    repo_path,
)

COMPOSE_FILE = REPO / "compose.yaml"
SCHEMA_FILE = REPO / "tests" / "data" / "compose-spec.json"  # vendored: see tests/data/README.md

# The daemon's environment contract (issues 3 and 4); used until swarm.config exists.
DAEMON_ENV_CONTRACT = frozenset(
    {
        "SWARM_DIR",
        "SWARM_NAME",
        "SWARM_NODE",
        "SWARM_REDIS_URL",
        "SWARM_ROLE",
        "SWARM_STATE_DIR",
        "SWARM_HTTP",
        "SWARM_CONFIG",
        "SWARM_DEBOUNCE_MS",
        "SWARM_LOG_JSON",
    }
)
# `swarm status` flags (issue 4); used until swarm.cli exists.
STATUS_FLAGS_CONTRACT = frozenset(
    {"--swarm", "--redis-url", "--json", "--files", "--wait", "--watch"}
)
SIDECARS = {"cloud-swarm": "cloud", "local-swarm": "local"}  # sidecar -> its agent
LONG_RUNNING = {"redis", *SIDECARS}
# Top-level keys both Compose v2 and v1.29 (docker-compose) accept; v1 rejects `name:`.
PORTABLE_TOP_LEVEL = {"services", "volumes", "networks", "configs", "secrets"}


# ---------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "compose.yaml is not a mapping"
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def argv_of(value: Any) -> list[str]:
    """A compose command/entrypoint/healthcheck test as a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(item) for item in value]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.partition("=") for item in environment)
        return {key: value for key, _, value in pairs}
    return {str(key): str(value) for key, value in environment.items()}


def effective_env(service: dict[str, Any]) -> dict[str, str]:
    """What the process sees: the image's ENV, overridden by the service's environment."""
    env = image_env() if "build" in service else {}
    env.update(env_of(service))
    return env


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def optional_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            return None
        raise


def daemon_env_names() -> frozenset[str]:
    """The SWARM_* names the daemon reads: from swarm.config when it exists, else the contract."""
    config = optional_module("swarm.config")
    if config is None:
        return DAEMON_ENV_CONTRACT
    names = set(re.findall(r"SWARM_[A-Z0-9_]+", inspect.getsource(config)))
    for _, model in inspect.getmembers(config, inspect.isclass):
        fields = getattr(model, "model_fields", None)
        if isinstance(fields, dict) and model.__module__ == config.__name__:
            names.update(f"SWARM_{field.upper()}" for field in fields)
    names.discard("SWARM_")
    return frozenset(names)


def status_flags() -> frozenset[str]:
    """`swarm status` options: from the click CLI when it exists, else the contract."""
    cli = optional_module("swarm.cli")
    command = getattr(getattr(cli, "main", None), "commands", {}).get("status") if cli else None
    if command is None:
        return STATUS_FLAGS_CONTRACT
    return frozenset(opt for param in command.params for opt in getattr(param, "opts", []))


def load_agent_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_agent", REPO / "deploy" / "agent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- schema


def test_compose_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert errors == [], "compose.yaml violates the Compose Specification:\n" + "\n".join(errors)


def test_the_demo_topology_is_complete(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "cloud", "cloud-swarm", "local", "local-swarm", "status"} <= set(services)
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert argv_of(redis["healthcheck"]["test"])[-2:] == ["redis-cli", "ping"]


# ---------------------------------------------------------------- files and image




def test_every_build_context_and_dockerfile_exists(services: dict[str, dict[str, Any]]) -> None:
    built = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert set(SIDECARS) | set(SIDECARS.values()) | {"status"} <= set(built)
    for name, build in built.items():
        context = REPO / (build if isinstance(build, str) else build.get("context", "."))
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (context / dockerfile).resolve() == DOCKERFILE, f"{name}: unexpected Dockerfile"


def test_every_file_a_service_runs_exists_in_the_image(services: dict[str, dict[str, Any]]) -> None:
    in_app = copied_into_app()
    mentioned: list[str] = []
    for name, service in services.items():
        healthcheck = service.get("healthcheck") or {}
        words = [
            *argv_of(service.get("entrypoint")),
            *argv_of(service.get("command")),
            *argv_of(healthcheck.get("test")),
        ]
        for app_path in app_paths(words):
            mentioned.append(app_path)
            assert repo_path(app_path).exists(), f"{name}: {app_path} is not in the repository"
            top = app_path.removeprefix(APP_ROOT).split("/")[0]
            assert top in in_app, f"{name}: {top} is not copied into /app"
    assert any(path.endswith("deploy/agent.py") for path in mentioned)
    assert any(path.endswith("daemon/healthcheck.py") for path in mentioned)
    assert any("deploy/seed" in path for path in mentioned)


# ---------------------------------------------------------------- the daemon's contract


def test_every_swarm_variable_is_one_the_daemon_reads(services: dict[str, dict[str, Any]]) -> None:
    known = daemon_env_names()
    used = {key for service in services.values() for key in env_of(service)}
    used |= set(image_env())
    unknown = {key for key in used if key.startswith("SWARM_")} - known
    assert not unknown, f"SWARM_* variables the daemon does not read: {sorted(unknown)}"


def test_sidecars_are_fully_configured_and_probe_their_own_port(
    services: dict[str, dict[str, Any]],
) -> None:
    for sidecar, role in SIDECARS.items():
        service = services[sidecar]
        assert "entrypoint" not in service, f"{sidecar} must run the image's `swarm daemon`"
        env = effective_env(service)
        assert {"SWARM_DIR", "SWARM_NAME", "SWARM_NODE", "SWARM_REDIS_URL"} <= set(env)
        assert env["SWARM_NODE"] == role and env.get("SWARM_ROLE") == role
        http = env["SWARM_HTTP"]
        assert http.rpartition(":")[0] == "0.0.0.0", "other containers must reach the sidecar"
        check = argv_of(service["healthcheck"]["test"])
        assert check[:3] == ["CMD", "python", "/app/daemon/healthcheck.py"]
        probe = urlsplit(check[3])
        assert (probe.hostname, probe.port, probe.path) == ("127.0.0.1", port_of(http), "/readyz")
        for mapping in service.get("ports", []):
            assert port_of(str(mapping)) == port_of(http), f"{sidecar}: {mapping} misses the port"
        redis_url = urlsplit(env["SWARM_REDIS_URL"])
        assert redis_url.hostname in services and redis_url.port == 6379


def test_agents_share_the_memory_folder_of_their_own_sidecar(
    services: dict[str, dict[str, Any]],
) -> None:
    parser = load_agent_module().build_parser()
    volumes_by_role = {}
    for sidecar, role in SIDECARS.items():
        memory_dir = effective_env(services[sidecar])["SWARM_DIR"]
        sidecar_mounts = {
            str(v).split(":")[1]: str(v).split(":")[0] for v in services[sidecar]["volumes"]
        }
        agent = services[role]
        assert argv_of(agent["entrypoint"]) == ["python", "/app/deploy/agent.py"]
        args = parser.parse_args(argv_of(agent["command"]))  # the agent accepts every flag
        assert args.role == role
        agent_mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in agent["volumes"]}
        assert agent_mounts[str(args.dir)] == sidecar_mounts[memory_dir], (
            f"{role} agent and {sidecar} do not share one memory volume"
        )
        volumes_by_role[role] = sidecar_mounts[memory_dir]
        log = args.log or load_agent_module().default_log(args.dir, role)
        assert log.is_relative_to(args.dir), (
            f"{role} agent must log in its memory volume, where a second `up` finds the log"
        )
    assert len(set(volumes_by_role.values())) == len(SIDECARS), "the nodes must not share a folder"


def test_agents_meet_at_a_barrier_that_is_reset_before_they_start(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Both agents wait for each other in one shared folder, and a one-shot service clears the
    markers a previous `up` left there before either starts (else they would not wait)."""
    module = load_agent_module()
    parser = module.build_parser()
    barrier_volumes = set()
    for role in SIDECARS.values():
        agent = services[role]
        args = parser.parse_args(argv_of(agent["command"]))
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in agent["volumes"]}
        barrier_volumes.add(mounts[str(args.barrier)])
        reset = [name for name, cond in depends_on(agent).items()
                 if cond == "service_completed_successfully"]
        assert reset == ["barrier-reset"], f"{role} must start after the barrier is reset"
    assert len(barrier_volumes) == 1, "both agents must share one barrier folder"

    reset = services["barrier-reset"]
    [folder] = [str(v).split(":")[1] for v in reset["volumes"]
                if str(v).split(":")[0] in barrier_volumes]
    for role in SIDECARS.values():
        for phase in ("start", "focus"):
            module.Barrier(tmp_path, role).mark(phase)
    keep = tmp_path / "unrelated.txt"
    keep.write_text("x", encoding="utf-8")
    script = argv_of(reset["command"])[-1].replace(folder, str(tmp_path))
    subprocess.run([*argv_of(reset["entrypoint"]), script], check=True, timeout=30)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["unrelated.txt"]


def test_status_service_asks_the_demo_swarm(services: dict[str, dict[str, Any]]) -> None:
    status = services["status"]
    argv = [*argv_of(status.get("entrypoint")), *argv_of(status.get("command"))]
    assert argv[:2] == ["swarm", "status"]
    flags = {word for word in argv[2:] if word.startswith("--")}
    assert flags <= status_flags(), f"unknown `swarm status` flags: {flags - status_flags()}"
    options = argparse.ArgumentParser(add_help=False)
    for flag in ("--swarm", "--redis-url", "--wait"):
        options.add_argument(flag)
    parsed, _ = options.parse_known_args(argv[2:])
    sidecar_env = effective_env(services["cloud-swarm"])
    assert parsed.swarm == sidecar_env["SWARM_NAME"]
    assert parsed.redis_url == sidecar_env["SWARM_REDIS_URL"]
    assert float(parsed.wait) > 0


def mounts_of(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Target path -> (volume, mode) of a service's short-syntax volumes."""
    found = {}
    for spec in service.get("volumes", []):
        source, target, *mode = str(spec).split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found


def test_status_runs_alone_and_not_in_up(services: dict[str, dict[str, Any]]) -> None:
    """`docker compose run --rm status` starts what status depends on: depending on the agents
    ran the whole demo a second time. It must start nothing, and `up` must not run it before the
    agents finished (up ends with verify instead)."""
    status = services["status"]
    assert depends_on(status) == {}, "`run --rm status` would start these services again"
    assert status.get("profiles"), "status in `up` would judge the swarm before the agents ran"


def test_verify_proves_both_memory_volumes_read_only_after_the_agents(
    services: dict[str, dict[str, Any]],
) -> None:
    from swarm.cli_demo import verify as verify_command

    verify = services["verify"]
    assert not verify.get("profiles"), "`up` must end with the proof"
    argv = [*argv_of(verify.get("entrypoint")), *argv_of(verify.get("command"))]
    assert argv[:2] == ["swarm", "verify"]
    params = verify_command.make_context("verify", argv[2:]).params  # the real CLI parses it
    mounts = mounts_of(verify)
    memory_volumes = set()
    for sidecar, agent in SIDECARS.items():
        memory_dir = effective_env(services[sidecar])["SWARM_DIR"]
        memory_volumes.add(mounts_of(services[sidecar])[memory_dir][0])
        assert depends_on(verify).get(agent) == "service_completed_successfully"
    given = [mounts[str(folder)] for folder in params["folders"]]
    assert {volume for volume, _ in given} == memory_volumes and len(given) == len(SIDECARS)
    assert all(mode == "ro" for _, mode in given), "verify must not write the memories"
    sidecar_env = effective_env(services["cloud-swarm"])
    assert params["swarm"] == sidecar_env["SWARM_NAME"]
    assert params["redis_url"] == sidecar_env["SWARM_REDIS_URL"]
    assert depends_on(verify).get("redis") == "service_healthy"
    assert params["wait"] > 0


def test_sidecars_show_their_node_name_as_host(services: dict[str, dict[str, Any]]) -> None:
    """The status table's host column shows the container's hostname: an id unless it is set."""
    for sidecar, role in SIDECARS.items():
        assert services[sidecar].get("hostname") == role


def test_long_running_services_restart_alike_and_one_shots_never(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in LONG_RUNNING:
            assert service.get("restart") == "unless-stopped", f"{name} needs a restart policy"
        else:
            assert service.get("restart", "no") == "no", f"one-shot {name} would run again"


def test_published_ports_leave_the_daemons_default_port_free(
    services: dict[str, dict[str, Any]],
) -> None:
    """A user already running `swarm daemon` on this machine holds 127.0.0.1:8732."""
    from swarm.config import DEFAULT_HTTP

    published = [
        int(str(mapping).split(":")[-2])
        for service in services.values()
        for mapping in service.get("ports", [])
    ]
    assert published, "the sidecars' HTTP endpoints should be reachable from the host"
    assert port_of(DEFAULT_HTTP) not in published
    assert len(set(published)) == len(published)


def test_the_file_works_with_compose_v1_and_v2(compose: dict[str, Any]) -> None:
    extra = {key for key in compose if not key.startswith("x-")} - PORTABLE_TOP_LEVEL
    assert not extra, f"docker-compose v1 rejects the top-level keys {sorted(extra)}"


# ---------------------------------------------------------------- start order


def test_start_order_follows_health(services: dict[str, dict[str, Any]]) -> None:
    for sidecar, agent in SIDECARS.items():
        assert depends_on(services[sidecar]).get("redis") == "service_healthy"
        assert depends_on(services[agent]).get(sidecar) == "service_healthy"
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition == "service_healthy":
                healthcheck = services[dependency].get("healthcheck") or {}
                assert healthcheck.get("test") and not healthcheck.get("disable"), (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )


