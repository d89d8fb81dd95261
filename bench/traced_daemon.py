"""`python -m bench.traced_daemon daemon ...`: `swarm daemon` under tracemalloc.

Takes the same arguments as `swarm`. A thread snapshots the Python heap every
`SWARM_TRACE_EVERY` seconds (default 60) and writes to `SWARM_TRACE_OUT` (default stderr) the
allocation sites that grew most since the first snapshot (taken after `SWARM_TRACE_WARMUP`
seconds, default 60: the import and catch-up are over by then), grouped by their innermost
`SWARM_TRACE_FRAMES` frames (default 8; swarm's own frames first). A leak shows as a site whose
size keeps growing from one report to the next; a cache that levels off stops growing.
tracemalloc slows the daemon several times over: read its figures as shares, not speeds.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

_TOP = 15
_FILTERS = [
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def malloc_state() -> str:
    """What glibc holds (the Rust side of pycrdt and SQLite allocate there, unseen by
    tracemalloc): in use, free but kept (fragments not given back), and mmap'd blocks."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return "malloc: no mallinfo2 here"
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    mb = 2**20
    return (
        f"malloc: in use {info.uordblks / mb:.1f} MB, free in arenas {info.fordblks / mb:.1f} MB,"
        f" mmap {info.hblkhd / mb:.1f} MB"
    )


def _site(trace: tracemalloc.StatisticDiff) -> str:
    """The innermost frame, then the project's own frames that led to it."""
    inner, *rest = trace.traceback
    ours = [f for f in rest if "site-packages" not in f.filename][:4]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in [inner, *ours])


def report(baseline: tracemalloc.Snapshot, minute: float) -> str:
    snapshot = tracemalloc.take_snapshot().filter_traces(_FILTERS)
    diffs = snapshot.compare_to(baseline, "traceback")
    total = sum(s.size for s in snapshot.statistics("filename"))
    lines = [
        f"--- {minute:.1f} min: traced heap {total / 2**20:.1f} MB; {malloc_state()}",
        "grew most since the baseline:",
    ]
    for diff in diffs[:_TOP]:
        lines.append(
            f"{diff.size_diff / 1024:+10.1f} KiB {diff.count_diff:+8d} blocks  {_site(diff)}"
        )
    return "\n".join(lines) + "\n"


def _watch(every: float, warmup: float, out: str | None) -> None:
    started = time.monotonic()
    time.sleep(warmup)
    baseline = tracemalloc.take_snapshot().filter_traces(_FILTERS)
    while True:
        time.sleep(every)
        text = report(baseline, (time.monotonic() - started) / 60)
        if out:
            with open(out, "a", encoding="utf-8") as sink:
                sink.write(text)
        else:
            sys.stderr.write(text)


def main() -> None:
    tracemalloc.start(int(os.environ.get("SWARM_TRACE_FRAMES", "8")))
    every = float(os.environ.get("SWARM_TRACE_EVERY", "60"))
    warmup = float(os.environ.get("SWARM_TRACE_WARMUP", "60"))
    out = os.environ.get("SWARM_TRACE_OUT")
    threading.Thread(target=_watch, args=(every, warmup, out), daemon=True).start()
    from swarm.cli import main as swarm_main

    swarm_main()


if __name__ == "__main__":
    main()
