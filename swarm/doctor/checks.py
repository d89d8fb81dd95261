"""One result line of `swarm doctor`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # worth knowing, or could not be checked fully; not a failure
    FAIL = "FAIL"  # the daemon will not work (or not as the user expects) until fixed
    SKIP = "skip"  # depends on a check that failed


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    fix: str = ""

    def line(self) -> str:
        """One line: status, check, what was found and, for a problem, how to fix it."""
        text = f"{self.status.value:<4}  {self.name + ':':<8} {self.message}"
        return f"{text.rstrip('.')}. Fix: {self.fix}" if self.fix else text


def one_line(text: object) -> str:
    """An error message on one line (Redis and OS errors can span several)."""
    return " ".join(str(text).split()) or type(text).__name__
