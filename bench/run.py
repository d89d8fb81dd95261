"""`python -m bench.run [--size smoke|full] [--json out.json] [--only SCENARIO]`.

Starts a private redis-server on a free loopback port, measures the floor, runs the scenarios,
prints one table and writes the figures as JSON.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console

from bench import api_path, catchup, file_to_file, memory, scale, throughput
from bench.floor import Floor, measure
from bench.report import Figure, Run, machine, print_table
from bench.server import BenchRedis
from bench.sizes import SIZES, Size

Scenario = Callable[[BenchRedis, Size, Floor], list[Figure]]

SCENARIOS: dict[str, Scenario] = {
    "api-path": api_path.run,
    "file-to-file": file_to_file.run,
    "throughput": throughput.run,
    "catch-up": catchup.run,
    "scale": scale.run,
    "memory": memory.run,
}


def run_bench(size: Size, only: tuple[str, ...], console: Console) -> Run:
    run = Run(size=size.name, machine=machine())
    with BenchRedis() as server:
        floor, figures = measure(server, size.floor_samples)
        run.add(figures)
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            console.print(f"[bold]{name}[/bold] ...")
            started = time.monotonic()
            try:
                run.add(scenario(server, size, floor))
                status = "ok"
            except Exception as exc:
                console.print(traceback.format_exc())
                status = f"failed: {type(exc).__name__}: {exc}"
            seconds = time.monotonic() - started
            run.scenarios[name] = {"status": status, "seconds": round(seconds, 2)}
            console.print(f"  {status} in {seconds:.1f} s")
    return run


@click.command()
@click.option("--size", type=click.Choice(sorted(SIZES)), default="full", show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write figures here.")
@click.option("--only", multiple=True, type=click.Choice(sorted(SCENARIOS)), help="Repeatable.")
def main(size: str, json_path: Path | None, only: tuple[str, ...]) -> None:
    """Benchmark swarm against its targets and the floor measured in the same run."""
    console = Console(width=170)
    run = run_bench(SIZES[size], only, console)
    print_table(run, console)
    if json_path is not None:
        run.save(json_path)
        console.print(f"figures written to {json_path}")
    failed = [name for name, info in run.scenarios.items() if info["status"] != "ok"]
    if failed:
        raise SystemExit(f"scenarios failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
