#!/usr/bin/env bash
# The test command: sets up, lints, runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check pilotfish tests bench samples
echo "== pytest"
exec .venv/bin/python -m pytest -q "$@"
