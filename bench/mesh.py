"""Figures for the mesh on one machine (not a test; run it as root from the repository root):

    .venv/bin/python bench/mesh.py [--requests 1000]

1. the time from ``pilotfish up -d --demo`` to bookinfo's /productpage answering 200 through
   the gateway (as ``pilotfish demo`` does it: up, apply bookinfo, its gateway and destination
   rules, wait);
2. the resident memory of the whole mesh at rest: the ``up`` process (control plane and
   runtime), the gateway, the sidecars, and (apart) the bookinfo apps;
3. the latency of /productpage through the gateway (sequential requests on one keep-alive
   connection): p50 and p99 with sidecars, then again with the same pods without sidecars
   (namespace ``istio-injection: disabled``; productpage then reaches details and reviews
   through the ClusterIP DNAT rules).

It uses its own state directory, ports, bridge and CIDRs, and stops the mesh at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOKINFO = ROOT / "samples" / "bookinfo" / "platform" / "bookinfo.yaml"


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def netns_pids(prefix: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    pids: list[int] = []
    for ln in out.splitlines():
        ns = ln.split()[0]
        if ns.startswith(prefix + "-"):
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids += [int(x) for x in r.stdout.split()]
    return pids


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def latency(port: int, n: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    bad = 0
    for i in range(n + 50):
        t0 = time.perf_counter()
        conn.request("GET", "/productpage")
        r = conn.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200 or b"Error fetching" in body:
            bad += 1
        if i >= 50:  # warm-up
            times.append(dt * 1000)
    conn.close()
    return {"p50_ms": round(percentile(times, 50), 2), "p99_ms": round(percentile(times, 99), 2),
            "mean_ms": round(statistics.fmean(times), 2), "errors": bad, "requests": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (pods in network namespaces)", file=sys.stderr)
        return 2
    state = Path(tempfile.mkdtemp(prefix="pf-measure-")) / "state"
    api, disc, gw = 27080, 27010, 27090
    env = {**os.environ, "PILOTFISH_API": f"127.0.0.1:{api}", "PILOTFISH_STATE": str(state)}
    pf = [sys.executable, "-m", "pilotfish"]
    t0 = time.monotonic()
    r = subprocess.run([*pf, "up", "-d", "--demo", "--state-dir", str(state), "--api-address", f"127.0.0.1:{api}",
                        "--discovery-port", str(disc), "--port-map", f"8080:{gw}", "--bridge", "pfm0",
                        "--netns-prefix", "pfm", "--pod-cidr", "10.246.0.0/16", "--service-cidr", "10.99.0.0/16"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    up_to_answer = time.monotonic() - t0
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        return 1
    said = [ln for ln in r.stdout.splitlines() if "answers through the gateway" in ln]
    results: dict = {"up_to_productpage_s": round(up_to_answer, 2), "up_says": said[0] if said else ""}
    try:
        time.sleep(5)  # at rest
        up_pid = int((state / "up.pid").read_text())
        pods = netns_pids("pfm")
        sidecars = [p for p in pods if "pilotfish proxy" in cmdline(p)]
        apps = [p for p in pods if p not in sidecars]
        recorded = [int(p) for p in json.loads((state / "pids.json").read_text())["pids"]]
        gateway = [p for p in recorded if "--role gateway" in cmdline(p)]
        mib = lambda pids: round(sum(rss_kib(p) for p in pids) / 1024, 1)  # noqa: E731
        results["rss_mib"] = {
            "up (control plane + runtime)": mib([up_pid]),
            "gateway": mib(gateway),
            f"{len(sidecars)} sidecars": mib(sidecars),
            "mesh total (up + gateway + sidecars)": mib([up_pid, *gateway, *sidecars]),
            f"{len(apps)} bookinfo app processes (not the mesh)": mib(apps),
        }
        results["with_sidecars"] = latency(gw, args.requests)
        # the same pods without sidecars
        subprocess.run([*pf, "delete", "-f", str(BOOKINFO)], env=env, capture_output=True, check=True)
        deadline = time.monotonic() + 60
        while netns_pids("pfm") and time.monotonic() < deadline:
            time.sleep(0.2)
        text = BOOKINFO.read_text().replace("istio-injection: enabled", "istio-injection: disabled")
        subprocess.run([*pf, "apply", "-f", "-"], input=text, text=True, env=env, capture_output=True, check=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            out = subprocess.run([*pf, "get", "deploy", "-o", "json"], env=env, capture_output=True, text=True).stdout
            deps = json.loads(out)["items"]
            if len(deps) == 6 and all((d.get("status") or {}).get("readyReplicas") == 1 for d in deps):
                break
            time.sleep(0.3)
        pods_out = subprocess.run([*pf, "get", "pods"], env=env, capture_output=True, text=True).stdout
        assert " 1/1 " in pods_out and " 2/2 " not in pods_out, pods_out
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the gateway's endpoints follow the new pods
            c = http.client.HTTPConnection("127.0.0.1", gw, timeout=10)
            try:
                c.request("GET", "/productpage")
                resp = c.getresponse()
                if resp.status == 200 and b"Error fetching" not in resp.read():
                    break
            except OSError:
                pass
            finally:
                c.close()
            time.sleep(0.3)
        results["without_sidecars"] = latency(gw, args.requests)
    finally:
        subprocess.run([*pf, "down", "--state-dir", str(state)], env=env, capture_output=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
