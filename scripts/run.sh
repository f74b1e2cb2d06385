#!/usr/bin/env bash
# The main command: sets up everything, then runs the mesh on this machine with the bookinfo
# sample and its ingress gateway (`pilotfish demo`): it waits until /productpage answers
# through the gateway, prints what to try next, and runs until Ctrl-C, which brings it down.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/pilotfish demo "$@"
