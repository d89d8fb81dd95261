#!/usr/bin/env python3
"""Container healthcheck for the swarm sidecar: exit 0 when `/readyz` answers 200.

Slim images carry no curl or wget, so Docker's HEALTHCHECK and compose's healthcheck run this
instead. Usage: `python healthcheck.py [URL]`; without a URL it probes `/readyz` on the port of
`SWARM_HTTP` (the daemon's own setting, default 127.0.0.1:8732), reaching a wildcard bind
address through loopback. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_HTTP = "127.0.0.1:8732"
TIMEOUT_S = 3.0
WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "[::1]"}


def readyz_url(http: str) -> str:
    """The /readyz URL of a daemon listening on `http` (HOST:PORT)."""
    if http.strip() == "0":
        raise ValueError("SWARM_HTTP=0: the daemon's HTTP server is disabled")
    host, sep, port = http.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"SWARM_HTTP={http!r}: expected HOST:PORT")
    host = WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/readyz"


def main(argv: list[str]) -> int:
    try:
        url = argv[1] if len(argv) > 1 else readyz_url(os.environ.get("SWARM_HTTP", DEFAULT_HTTP))
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
