"""Moments as users type them: ISO 8601 (`2026-11-30T14:00`, local time if no offset) or
relative to now (`-30m`, `2h`, `90s`, `1d`: that long ago)."""

from __future__ import annotations

import re
import time
from datetime import datetime

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_moment(text: str, now: float | None = None) -> float:
    """Seconds since the epoch; ValueError with a one-line message for anything else."""
    now = time.time() if now is None else now
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give ISO 8601 (2026-11-30T14:00) or an age (-30m, 2h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as people mean it
    return moment.timestamp()


def shown(moment: float | None) -> str:
    """Local time for tables; '?' when unknown."""
    if moment is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))
