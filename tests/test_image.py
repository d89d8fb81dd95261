"""daemon/Dockerfile and the sidecar's healthcheck script, checked without a Docker engine."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any

import pytest
from dockerfile import (
    REPO,
    app_paths,
    dockerfile_instructions,
    exec_form,
    image_env,
    instruction_args,
    port_of,
    repo_path,
)
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

DOCKERIGNORE = REPO / ".dockerignore"
LOCK = "daemon/requirements.txt"  # the image's pinned Python dependencies
# An exact Python release on a named Debian release, or any image pinned by digest.
PINNED_BASE = re.compile(
    r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?|\S+@sha256:[0-9a-f]{64}"
)


def test_dockerfile_builds_a_non_root_sidecar_image() -> None:
    instructions = dockerfile_instructions()
    users = instruction_args(instructions, "USER")
    assert users, "the image must switch to a non-root USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert exec_form(instruction_args(instructions, "ENTRYPOINT")[-1]) == ["swarm", "daemon"]
    healthchecks = instruction_args(instructions, "HEALTHCHECK")
    assert healthchecks, "the image needs a HEALTHCHECK"
    check = exec_form(healthchecks[-1].partition("CMD")[2])
    for app_path in app_paths(check):
        assert repo_path(app_path).is_file(), f"HEALTHCHECK runs missing {app_path}"
    assert any(
        instruction.startswith("pip install")
        for instruction in instruction_args(instructions, "RUN")
    ), "the image must install the project"


def test_base_image_is_pinned_to_an_exact_python_release() -> None:
    base = instruction_args(dockerfile_instructions(), "FROM")[0].split()[0]
    assert base.startswith("python:3.11"), "tests run on Python 3.11"
    assert PINNED_BASE.fullmatch(base), f"FROM {base}: a moving tag builds a different image"


def locked_versions() -> dict[NormalizedName, Version]:
    pins: dict[NormalizedName, Version] = {}
    for number, raw in enumerate((REPO / LOCK).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name.strip()), (
            f"{LOCK}:{number}: {raw!r} is not NAME==VERSION"
        )
        pins[canonicalize_name(name.strip())] = Version(version.strip())
    return pins


def active(requirement: Requirement) -> bool:
    """Whether the requirement applies on Linux with this Python (as in the image), no extras."""
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


def test_the_lock_pins_every_runtime_dependency_of_the_project() -> None:
    pins = locked_versions()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{LOCK} does not pin {requirement.name}"
        assert pins[name] in requirement.specifier, f"{LOCK}: {name} {pins[name]} is not {spec}"
    # Transitive: for every pinned release installed here, its own requirements are pinned too.
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != version:
            continue  # another release here: its metadata says nothing about the pinned one
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            dependency = canonicalize_name(requirement.name)
            if active(requirement):
                assert dependency in pins, f"{LOCK}: {name} needs {spec}, not pinned"
                assert pins[dependency] in requirement.specifier, f"{LOCK}: {name} needs {spec}"


def test_dependencies_install_in_a_layer_before_the_source() -> None:
    """A source edit must not re-install every dependency (~35 s): the pinned dependencies are
    installed from the lock file alone, then the project on top, without resolving again."""
    instructions = dockerfile_instructions()
    runs = [i for i, (key, rest) in enumerate(instructions) if key == "RUN" and "pip" in rest]
    copies = [i for i, (key, _) in enumerate(instructions) if key == "COPY"]
    locked = next((i for i in runs if f"-r {LOCK}" in instructions[i][1]), None)
    assert locked is not None, f"no RUN installs the pinned dependencies (pip install -r {LOCK})"
    copied_before = [
        source
        for i in copies
        if i < locked
        for source in exec_form(instructions[i][1])[:-1]
        if not source.startswith("--")
    ]
    assert copied_before == [LOCK], "only the lock may be copied before the dependency layer"
    source = next(i for i in copies if "swarm" in exec_form(instructions[i][1])[:-1])
    assert locked < source
    project = [instructions[i][1] for i in runs if i > source]
    assert any("--no-deps" in rest and "pip check" in rest for rest in project), (
        "the project must install without resolving again, and pip check the result"
    )


def test_pip_runs_without_the_root_warning() -> None:
    instructions = dockerfile_instructions()
    first_user = next((i for i, (key, _) in enumerate(instructions) if key == "USER"), None)
    pip_as_root = any(
        key == "RUN" and "pip" in rest and (first_user is None or i < first_user)
        for i, (key, rest) in enumerate(instructions)
    )
    if pip_as_root:
        assert image_env().get("PIP_ROOT_USER_ACTION") == "ignore"


def test_everything_the_dockerfile_copies_exists_and_is_not_dockerignored() -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for rest in instruction_args(dockerfile_instructions(), "COPY"):
        *sources, _target = exec_form(rest)
        for source in (s for s in sources if not s.startswith("--")):
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            hits = [p for p in ignored if fnmatch.fnmatch(source, p.removeprefix("**/"))]
            assert not hits, f"COPY {source} is excluded by .dockerignore ({hits})"


def test_image_defaults_match_the_daemons_port() -> None:
    env = image_env()
    exposed = {
        int(port.split("/")[0])
        for rest in instruction_args(dockerfile_instructions(), "EXPOSE")
        for port in rest.split()
    }
    assert port_of(env["SWARM_HTTP"]) in exposed


# ---------------------------------------------------------------- the healthcheck script


class _Readiness(BaseHTTPRequestHandler):
    ready = True

    def do_GET(self) -> None:
        ok = self.path == "/readyz" and type(self).ready
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def readiness_server() -> Iterator[tuple[type[_Readiness], int]]:
    handler = type("Readiness", (_Readiness,), {"ready": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "daemon" / "healthcheck.py"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck_follows_readyz_on_the_port_of_swarm_http(
    readiness_server: tuple[type[_Readiness], int],
) -> None:
    handler, port = readiness_server
    assert run_healthcheck({"SWARM_HTTP": f"0.0.0.0:{port}"}).returncode == 0
    handler.ready = False
    failing = run_healthcheck({"SWARM_HTTP": f"0.0.0.0:{port}"})
    assert failing.returncode == 1 and "unhealthy" in failing.stderr
    handler.ready = True
    assert run_healthcheck({}, f"http://127.0.0.1:{port}/readyz").returncode == 0


def test_healthcheck_reports_a_disabled_or_bad_http_setting_in_one_line() -> None:
    for value in ("0", "no-port"):
        done = run_healthcheck({"SWARM_HTTP": value})
        assert done.returncode == 1
        assert len(done.stderr.strip().splitlines()) == 1 and "SWARM_HTTP" in done.stderr
