"""Figures of a run: percentiles, targets, ratio to the floor; printed as a table, saved as JSON."""

from __future__ import annotations

import json
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Figure:
    """One measured quantity. `samples` give percentiles; `value` is for single numbers."""

    scenario: str
    metric: str
    unit: str
    value: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    count: int = 0
    target: str = ""
    met: bool | None = None
    floor_ratio: float | None = None  # this figure's p50 (or value) / the matching floor
    note: str = ""

    @property
    def headline(self) -> float | None:
        return self.p50 if self.p50 is not None else self.value


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def distribution(
    scenario: str, metric: str, unit: str, samples: list[float], **extra: Any
) -> Figure:
    if not samples:
        return Figure(scenario, metric, unit, note="no samples", **extra)
    return Figure(
        scenario,
        metric,
        unit,
        p50=percentile(samples, 50),
        p95=percentile(samples, 95),
        p99=percentile(samples, 99),
        count=len(samples),
        **extra,
    )


def mean(samples: list[float]) -> float:
    return statistics.fmean(samples) if samples else 0.0


@dataclass
class Run:
    size: str
    machine: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> status, seconds

    def add(self, figures: list[Figure]) -> None:
        self.figures.extend(figures)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "machine": self.machine,
            "scenarios": self.scenarios,
            "figures": [asdict(f) for f in self.figures],
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def machine() -> dict[str, Any]:
    import os

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(run: Run, console: Console) -> None:
    table = Table(title=f"swarm benchmarks ({run.size}) on {run.machine.get('cpu', '?')}, "
                  f"{run.machine.get('nproc', '?')} CPUs")  # fmt: skip
    for column in ("scenario", "metric", "unit", "p50 / value", "p95", "p99", "n", "x floor",
                   "target", "met"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("scenario", "metric") else "right")
    for f in run.figures:
        met = "" if f.met is None else ("yes" if f.met else "NO")
        table.add_row(
            f.scenario,
            f.metric + (f" ({f.note})" if f.note else ""),
            f.unit,
            _num(f.headline),
            _num(f.p95),
            _num(f.p99),
            str(f.count or ""),
            _num(f.floor_ratio),
            f.target,
            met,
        )
    console.print(table)
