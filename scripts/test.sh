#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: lint, types, then pytest.
# Tests start their own redis-server on free loopback ports; nothing else is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check swarm tests bench deploy
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
