#!/usr/bin/env bash
# Set up everything swarm needs on a fresh Debian machine with Python 3.11: a virtualenv in .venv
# with the project and its test tools, and redis-server and chromium (from Debian's packages)
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: redis-server and redis-tools (the tests start their own) and chromium (the status page is
# tested in a real headless browser, driven by Playwright; Playwright never downloads one).
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
# redis-cli makes the test cluster (redis-cli --cluster create); redis-server pulls it in, but say it.
command -v redis-cli >/dev/null 2>&1 || missing="$missing redis-tools"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
    echo "setup: installing$missing" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv 2>/dev/null; then
        echo "setup: installing python3-venv" >&2
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y -qq python3-venv >/dev/null
        "$PY" -m venv .venv
    fi
fi
# Re-install only when pyproject.toml changed since the last install.
stamp=.venv/.swarm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
