#!/usr/bin/env python3
"""Write the demo agents' shared schedule: when to start, when both change the same line.

Two agents in two containers cannot agree on "the same moment" by themselves; in docker compose a
one-shot service runs this once both sidecars are healthy, and each agent reads the file
(`agent.py --schedule FILE`). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the demo agents' shared schedule.")
    parser.add_argument("--out", type=Path, required=True, help="schedule file to (over)write")
    parser.add_argument("--lead", type=float, default=3.0,
                        help="seconds from now until the agents start (default 3)")
    parser.add_argument("--same-line-after", type=float, default=3.0,
                        help="seconds after the start at which both change the same line")
    args = parser.parse_args(argv)
    start_at = time.time() + args.lead
    schedule = {"start_at": start_at, "same_line_at": start_at + args.same_line_after}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(schedule) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"schedule: {json.dumps(schedule)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
