"""An agent in its own process, writing a memory file the way real agents do, for tests that need
real concurrency with a daemon's renders (threads of the test process would share its file table).

    python writer_process.py append PATH TAG COUNT INTERVAL HOLD
        COUNT times: open(PATH, 'a'), write one line "TAG NNNNN", close; INTERVAL seconds apart.
        The file is held open HOLD seconds before the line is written (an agent formatting
        its output, a logger that flushes late).
    python writer_process.py chunked PATH TAG CHUNKS LINES PAUSE_MIN PAUSE_MAX SEED
        Read PATH, then open(PATH, 'w') and write back what was read followed by CHUNKS chunks of
        LINES lines ("TAG cC lL"), flushing each chunk and pausing between chunks (streaming
        output); close at the end.
    python writer_process.py rewrite PATH TAG PAUSE
        Read PATH, then open(PATH, 'w') and write back its first half, flush, pause PAUSE seconds
        (an agent still producing its output), write the rest and one new line "TAG new", close.

Exit code 0 once done; the lines written are known to the caller from its arguments.
"""

from __future__ import annotations

import random
import sys
import time


def append(path: str, tag: str, count: int, interval: float, hold: float) -> None:
    next_at = time.monotonic()
    for number in range(count):
        with open(path, "a", encoding="utf-8") as file:
            if hold:
                time.sleep(hold)
            file.write(f"{tag} {number:05d}\n")
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def chunked(
    path: str, tag: str, chunks: int, lines: int, pauses: tuple[float, float], seed: int
) -> None:
    rng = random.Random(seed)
    try:
        with open(path, encoding="utf-8") as file:
            before = file.read()
    except FileNotFoundError:
        before = ""
    if before and not before.endswith("\n"):
        before += "\n"
    with open(path, "w", encoding="utf-8") as file:
        file.write(before)
        for chunk in range(chunks):
            file.write("".join(f"{tag} c{chunk} l{line}\n" for line in range(lines)))
            file.flush()
            if chunk + 1 < chunks:
                time.sleep(rng.uniform(*pauses))


def rewrite(path: str, tag: str, pause: float) -> None:
    with open(path, encoding="utf-8") as file:
        lines = file.read().splitlines(keepends=True)
    half = len(lines) // 2
    with open(path, "w", encoding="utf-8") as file:
        file.write("".join(lines[:half]))
        file.flush()
        time.sleep(pause)
        file.write("".join(lines[half:]) + f"{tag} new\n")


def chunked_lines(tag: str, chunks: int, lines: int) -> list[str]:
    """The lines `chunked` writes after what it read."""
    return [f"{tag} c{chunk} l{line}" for chunk in range(chunks) for line in range(lines)]


def appended_lines(tag: str, count: int) -> list[str]:
    return [f"{tag} {number:05d}" for number in range(count)]


if __name__ == "__main__":
    mode, target, label = sys.argv[1:4]
    if mode == "append":
        append(target, label, int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
    elif mode == "rewrite":
        rewrite(target, label, float(sys.argv[4]))
    else:
        chunked(
            target,
            label,
            int(sys.argv[4]),
            int(sys.argv[5]),
            (float(sys.argv[6]), float(sys.argv[7])),
            int(sys.argv[8]),
        )
