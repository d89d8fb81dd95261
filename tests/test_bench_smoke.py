"""The benchmark harness keeps working: a smoke-size run completes and writes every scenario.

Benchmarks are not tests, so no time is asserted; only that each scenario ran and reported
figures in valid JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_run_writes_every_scenario(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.run import SCENARIOS
    finally:
        sys.path.remove(str(ROOT))
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--size", "smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["size"] == "smoke"
    assert report["machine"]["nproc"] >= 1
    assert set(report["scenarios"]) == set(SCENARIOS)
    assert all(info["status"] == "ok" for info in report["scenarios"].values())
    reported = {figure["scenario"].split(" ", 1)[0] for figure in report["figures"]}
    assert {"floor", "1", "2", "3", "4", "5", "6"} <= reported
    for figure in report["figures"]:
        measured = figure["value"] if figure["p50"] is None else figure["p50"]
        assert isinstance(measured, int | float), figure


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chaos_run_reports_memory_over_time_and_converges() -> None:
    """bench/chaos.py at a tiny size: three daemons, edits, status asks, RSS table, convergence."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--minutes", "0.3", "--files", "12", "--rate", "20",
         "--sample", "2", "--status-every", "3", "--seed", "7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "slope 2nd half" in proc.stdout
    assert "heartbeats agree: yes" in proc.stdout
    assert "at rest" in proc.stdout
