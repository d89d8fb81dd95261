"""Reading daemon/Dockerfile without a Docker engine: its instructions, ENV, and what it copies
into the image. Shared by the image's and the compose file's tests."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "daemon" / "Dockerfile"
APP_ROOT = "/app/"  # where daemon/Dockerfile puts the project inside the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def instruction_args(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for key, rest in instructions if key == keyword]


def exec_form(text: str) -> list[str]:
    """The argv of a Dockerfile exec-form (JSON array) or shell-form argument."""
    text = text.strip()
    if text.startswith("["):
        parsed = json.loads(text)
        assert isinstance(parsed, list)
        return [str(item) for item in parsed]
    return shlex.split(text)


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instruction_args(dockerfile_instructions(), "ENV"):
        for token in shlex.split(rest):
            key, sep, value = token.partition("=")
            if sep:
                env[key] = value
    return env


def app_paths(words: list[str]) -> Iterator[str]:
    """Every /app/... path mentioned in a command (also inside `sh -c` scripts)."""
    for word in words:
        for match in re.finditer(r"/app/[\w./-]+", word):
            yield match.group(0)


def repo_path(app_path: str) -> Path:
    rel = app_path.removeprefix(APP_ROOT).rstrip("/.")
    return REPO / rel


def copied_into_app() -> set[str]:
    """Top-level names the Dockerfile copies into its WORKDIR (/app)."""
    names: set[str] = set()
    for rest in instruction_args(dockerfile_instructions(), "COPY"):
        *sources, target = (word for word in exec_form(rest) if not word.startswith("--"))
        if target.rstrip("/") in ("", ".", APP_ROOT.rstrip("/")):
            names.update(Path(source).name for source in sources)
        else:
            names.add(Path(target).name)
    return names


def port_of(host_port: str) -> int:
    """The port of HOST:PORT (also of a compose HOST:PUBLISHED:TARGET mapping: the target)."""
    return int(host_port.rpartition(":")[2])
