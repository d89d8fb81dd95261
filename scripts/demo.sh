#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the demo: a cloud and a local instance of one agent editing
# memory at the same time through a private Redis, then proof that both hold the same memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/swarm demo "$@"
