"""Transparent interception: iptables REDIRECT in a network namespace of our own, and the
proxy recovering the original destination with SO_ORIGINAL_DST to pick its filter chain,
as a sidecar's virtualOutbound (15001) and virtualInbound (15006) listeners do.

Needs root (network namespaces, iptables); skipped with the reason otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from proxyutil import HTTPBIN, ROOT

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and iptables"),
    pytest.mark.skipif(not shutil.which("iptables") or not shutil.which("ip"),
                       reason="needs iptables and iproute2 (scripts/setup.sh installs them as root)"),
]

PROXY_UID = 1337  # Istio's sidecar uid: its own traffic is exempt from redirection
APP_PORT = 18080  # where the "application" (httpbin) listens, inside the namespace
OTHER_PORT = 17777  # a port no chain handles: passthrough to the original destination


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns():
    name = f"pf-test-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    procs: list[subprocess.Popen] = []
    # the proxy runs as its own uid, so its files live where that uid can reach them
    tmp = Path(tempfile.mkdtemp(prefix="pf-intercept-"))
    os.chmod(tmp, 0o777)
    try:
        ex = ["ip", "netns", "exec", name]
        sh(*ex, "ip", "link", "set", "lo", "up")
        sh(*ex, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
        nat = [*ex, "iptables", "-t", "nat"]
        sh(*nat, "-N", "PF_OUTPUT")
        sh(*nat, "-A", "OUTPUT", "-p", "tcp", "-j", "PF_OUTPUT")
        sh(*nat, "-A", "PF_OUTPUT", "-m", "owner", "--uid-owner", str(PROXY_UID), "-j", "RETURN")
        # outbound: calls to 127.0.0.2 (a "service address") go to the sidecar's 15001
        sh(*nat, "-A", "PF_OUTPUT", "-d", "127.0.0.2/32", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001")
        # inbound (simulated for local traffic): port 19080 goes to 15006
        sh(*nat, "-A", "PF_OUTPUT", "-p", "tcp", "--dport", "19080", "-j", "REDIRECT", "--to-ports", "15006")
        # the upstream application, and a plain TCP server for passthrough
        procs.append(subprocess.Popen([*ex, sys.executable, str(HTTPBIN), "--host", "0.0.0.0",
                                       "--port", str(APP_PORT), "--name", "app"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        assert "listening" in procs[-1].stdout.readline()
        procs.append(subprocess.Popen([*ex, sys.executable, str(HTTPBIN), "--host", "0.0.0.0",
                                       "--port", str(OTHER_PORT), "--name", "other"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        assert "listening" in procs[-1].stdout.readline()
        cfg = sidecar_config(tmp)
        path = tmp / "sidecar.yaml"
        path.write_text(yaml.safe_dump(cfg))
        os.chmod(path, 0o644)
        log = open(tmp / "sidecar.log", "w")
        procs.append(subprocess.Popen(
            [*ex, "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups",
             sys.executable, "-m", "pilotfish", "proxy", "--config", str(path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT)))
        for _ in range(100):
            r = sh(*ex, "python3", "-c", "import urllib.request as u;print(u.urlopen('http://127.0.0.1:15020/ready').status)",
                   check=False)
            if r.stdout.strip() == "200":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError((tmp / "sidecar.log").read_text())
        yield name, tmp
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def sidecar_config(tmp) -> dict:
    svc = "outbound|9080||reviews.default.svc.cluster.local"
    return {
        "version": "1",
        "node": {"role": "sidecar", "name": "productpage-v1-1", "namespace": "default"},
        "admin": {"address": "127.0.0.1", "port": 15020},
        "access_log": {"path": str(tmp / "access.log")},
        "listeners": [
            {"name": "virtualOutbound", "address": "0.0.0.0", "port": 15001, "use_original_dst": True,
             "filter_chains": [{"name": "0.0.0.0_9080", "destination_port": 9080,
                                "http": {"route_config": "9080", "traffic_direction": "OUTBOUND"}}],
             "default_filter_chain": {"name": "PassthroughFilterChain", "tcp": {"cluster": "PassthroughCluster"}}},
            {"name": "virtualInbound", "address": "0.0.0.0", "port": 15006, "use_original_dst": True,
             "filter_chains": [{"name": "inbound|19080||", "destination_port": 19080,
                                "http": {"route_config": "inbound|19080||", "traffic_direction": "INBOUND"}}]},
        ],
        "routes": [
            {"name": "9080", "virtual_hosts": [{"name": "reviews.default.svc.cluster.local:9080",
                                                "domains": ["reviews", "reviews:9080", "127.0.0.2:9080", "*"],
                                                "routes": [{"name": "default", "match": {"uri": {"prefix": "/"}},
                                                            "route": {"clusters": [{"cluster": svc}]}}]}]},
            {"name": "inbound|19080||", "virtual_hosts": [{"name": "inbound|http|19080", "domains": ["*"],
                                                          "routes": [{"name": "default", "match": {"uri": {"prefix": "/"}},
                                                                      "route": {"clusters": [{"cluster": "inbound|19080||"}]}}]}]},
        ],
        "clusters": [
            {"name": svc, "type": "STATIC"},
            {"name": "inbound|19080||", "type": "STATIC"},
            {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "protocol": "tcp"},
        ],
        "endpoints": [
            {"cluster": svc, "endpoints": [{"address": "127.0.0.1", "port": APP_PORT}]},
            {"cluster": "inbound|19080||", "endpoints": [{"address": "127.0.0.1", "port": APP_PORT}]},
        ],
    }


def fetch(ns: str, url: str) -> dict:
    code = (f"import json,urllib.request as u;r=u.urlopen({url!r}, timeout=5);"
            "print(json.dumps({'status': r.status, 'headers': dict(r.headers), 'body': r.read().decode()}))")
    r = sh("ip", "netns", "exec", ns, "python3", "-c", code)
    return json.loads(r.stdout)


def log_lines(tmp, needle: str) -> list[str]:
    """Access-log lines containing ``needle`` (waiting for the batched write)."""
    for _ in range(60):
        path = tmp / "access.log"
        lines = [ln for ln in path.read_text().splitlines() if needle in ln] if path.exists() else []
        if lines:
            return lines
        time.sleep(0.05)
    return []


def test_outbound_call_is_intercepted_and_routed(netns):
    ns, tmp = netns
    r = fetch(ns, "http://127.0.0.2:9080/anything")  # the app calls the "service"; no proxy settings
    assert r["status"] == 200
    assert r["headers"]["server"] == "istio-envoy"  # it went through the sidecar
    echo = json.loads(r["body"])
    assert echo["upstream"] == "app" and "x-request-id" in echo["headers"]
    lines = log_lines(tmp, "/anything")
    assert lines and "outbound|9080||reviews.default.svc.cluster.local" in lines[-1]
    assert "127.0.0.2:9080" in lines[-1]  # downstream local address: the original destination


def test_inbound_chain_by_original_port(netns):
    ns, tmp = netns
    r = fetch(ns, "http://127.0.0.1:19080/headers")
    assert r["status"] == 200 and r["headers"]["server"] == "istio-envoy"
    assert log_lines(tmp, "inbound|19080||")


def test_unmatched_port_passes_through_to_original_destination(netns):
    ns, tmp = netns
    r = fetch(ns, f"http://127.0.0.2:{OTHER_PORT}/anything")
    assert r["status"] == 200
    assert json.loads(r["body"])["upstream"] == "other"
    assert "server" not in {k.lower() for k in r["headers"]} or r["headers"].get("Server") != "istio-envoy"
    lines = log_lines(tmp, "PassthroughCluster")
    assert lines and f"127.0.0.2:{OTHER_PORT}" in lines[-1], (tmp / "sidecar.log").read_text()
