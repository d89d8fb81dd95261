"""`swarm demo` end to end: private Redis, two sidecars, two scripted agents, and the proof."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path


def test_swarm_demo_runs_end_to_end_and_proves_one_memory(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "swarm", "demo", "--workdir", str(workdir), "--entries", "8"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo passed" in result.stdout
    cloud, local = workdir / "cloud", workdir / "local"
    # The demo's claim, checked independently: MEMORY.md byte-identical on both nodes...
    digest = {
        hashlib.sha256((root / "MEMORY.md").read_bytes()).hexdigest() for root in (cloud, local)
    }
    assert len(digest) == 1
    assert digest.pop() in result.stdout.replace("\n", "")
    # ...and every entry each agent logged present exactly once, on both nodes.
    for role in ("cloud", "local"):
        log = workdir / role / ".demo" / f"{role}-entries.jsonl"
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(entries) >= 8
        for entry in entries:
            if entry.get("kind") == "focus":
                continue
            for root in (cloud, local):
                text = (root / entry["file"]).read_text(encoding="utf-8")
                assert text.splitlines().count(entry["line"]) == 1, (root, entry)


def test_swarm_demo_without_redis_says_how_to_install_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarm", "demo", "--workdir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/nonexistent", "HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "redis-server" in lines[0] and "apt-get install" in lines[0]
    assert "Traceback" not in result.stderr
