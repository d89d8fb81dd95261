"""daemon/Dockerfile and the sidecar's healthcheck script, checked without a Docker engine."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

DOCKERIGNORE = REPO / ".dockerignore"


def test_dockerfile_builds_a_non_root_sidecar_image() -> None:
    instructions = dockerfile_instructions()
    assert instruction_args(instructions, "FROM")[0].startswith("python:3.11-slim")
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
