"""`swarm doctor`: checks what users get wrong when they set a sidecar up, and says how to fix it.

It takes the daemon's settings (so the same command line, environment or config file serves
both) and prints one line per check: `ok`, `warn` (worth knowing, not a failure), `FAIL` (with
the fix) or `skip` (depends on a check that failed). Exit code 0 when no check failed, 1 when one
did; settings that do not validate exit 2 before any check, as for the daemon. Nothing it does
disturbs a daemon running on the same folders or swarm (see local.py and remote.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarm.config import DaemonSettings
from swarm.doctor.acl import check_acl
from swarm.doctor.checks import Check, Status
from swarm.doctor.local import INOTIFY_WATCHES, local_checks
from swarm.doctor.remote import check_clock, check_key_match, connect, load_key, redis_user

__all__ = ["Check", "Probes", "Status", "diagnose", "run_doctor"]


@dataclass(frozen=True)
class Probes:
    """What the checks read from this machine besides the settings (tests replace them)."""

    inotify_limit: Path = INOTIFY_WATCHES
    clock: Callable[[], float] = time.time


async def diagnose(settings: DaemonSettings, probes: Probes | None = None) -> list[Check]:
    probes = probes or Probes()
    checks = local_checks(settings, probes.inotify_limit)
    key, codec = load_key(settings)
    connection = await connect(settings)
    checks.append(connection.check)
    client = connection.client
    if client is None:
        unreachable = "Redis unreachable"
        key_line = (
            key
            if codec is None
            else Check(
                "key",
                Status.WARN,
                f"{key.message}; not compared with the swarm: {unreachable}",
            )
        )
        return [
            *checks,
            Check("acl", Status.SKIP, unreachable),
            key_line,
            Check("clock", Status.SKIP, unreachable),
        ]
    try:
        checks.append(
            await check_acl(client, redis_user(settings), settings.swarm, connection.cluster)
        )
        if codec is None:
            checks.append(key)
        else:
            checks.append(await check_key_match(client, settings.swarm, codec, key))
        checks.append(await check_clock(client, probes.clock))
    finally:
        await client.aclose()
    return checks


async def run_doctor(
    settings: DaemonSettings, echo: Callable[[str], None], probes: Probes | None = None
) -> int:
    """Print one line per check; 1 if any failed, else 0."""
    checks = await diagnose(settings, probes)
    for check in checks:
        echo(check.line())
    failed = sum(1 for check in checks if check.status is Status.FAIL)
    echo(f"{failed} problem{'s' if failed != 1 else ''} found" if failed else "no problem found")
    return 1 if failed else 0
