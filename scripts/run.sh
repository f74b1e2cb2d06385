#!/usr/bin/env bash
# The main command: sets up, then runs a standalone Pilotfish proxy in front of two sample
# httpbin upstreams (v1 and v2) until Ctrl-C. (`pilotfish up` with bookinfo replaces this
# once the mesh lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
PY=.venv/bin/python
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
$PY samples/httpbin/server.py --port 8001 --name httpbin-v1 & pids+=($!)
$PY samples/httpbin/server.py --port 8002 --name httpbin-v2 & pids+=($!)
.venv/bin/pilotfish proxy --config samples/proxy/standalone.yaml & pids+=($!)
for _ in $(seq 50); do
  curl -fsS http://127.0.0.1:15000/ready >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<MSG

Pilotfish is running: a proxy on 127.0.0.1:8080 in front of httpbin v1 (90%) and v2 (10%).
Try:
  curl -i http://127.0.0.1:8080/headers
  curl -i -H 'end-user: jason' http://127.0.0.1:8080/anything
  curl -i http://127.0.0.1:8080/status/503
  curl -s http://127.0.0.1:15000/stats | grep upstream_rq_total
  curl -s http://127.0.0.1:15000/config_dump
Access logs follow below. Ctrl-C stops everything.

MSG
wait "${pids[2]}"
