"""End to end: a control plane, a gateway proxy that gets its configuration from it, and two
upstream versions of a service. Config applied with the CLI changes live traffic; a snapshot
the proxy rejects shows as NACKED; killing the control plane leaves traffic flowing.

Everything runs on loopback with ephemeral ports: the upstreams are WorkloadEntries at
127.0.0.1, and the gateway's listener port is the Gateway resource's server port.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from proxyutil import Upstream, free_port

from pilotfish.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

MESH = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector: {{app: reviews}}
  ports:
  - {{name: http, port: 9080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
spec: {{address: 127.0.0.1, labels: {{app: reviews, version: v1}}, ports: {{http: {v1}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v2
spec: {{address: 127.0.0.1, labels: {{app: reviews, version: v2}}, ports: {{http: {v2}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw}, name: http, protocol: HTTP}}
    hosts: ["*"]
"""

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {w1}
    - destination: {{host: reviews, subset: v2}}
      weight: {w2}
"""


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.api_port = free_port()
        self.disc_port = free_port()
        self.gw_port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.v1 = Upstream("v1")
        self.v2 = Upstream("v2")
        self.cp: subprocess.Popen | None = None
        self.start_controlplane()
        (tmp / "mesh.yaml").write_text(MESH.format(v1=self.v1.port, v2=self.v2.port, gw=self.gw_port))
        self.set_split(100, 0)
        code, out, err = self.cli("apply", "-f", str(tmp / "mesh.yaml"), "-f", str(tmp / "vs.yaml"))
        assert code == 0, err
        self.gw_log = open(tmp / "gateway.log", "w")
        self.gw = subprocess.Popen(
            [sys.executable, "-m", "pilotfish", "proxy", "--discovery", f"127.0.0.1:{self.disc_port}",
             "--token-file", str(self.state / "token"), "--role", "gateway", "--pod-name", "ingress-1",
             "--namespace", "default", "--label", "istio=ingressgateway", "--ip", "127.0.0.1",
             "--admin-port", "0", "--discovery-backoff-max", "0.3"],
            stdout=self.gw_log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self.wait(lambda: self.get()[0] == 200, "the gateway serving its first snapshot")

    # -- processes
    def start_controlplane(self) -> None:
        log = open(self.tmp / "controlplane.log", "a")
        start = (self.tmp / "controlplane.log").read_text().count("ready;")
        self.cp = subprocess.Popen(
            [sys.executable, "-m", "pilotfish", "controlplane", "--state-dir", str(self.state),
             "--api-address", f"127.0.0.1:{self.api_port}", "--discovery-address", f"127.0.0.1:{self.disc_port}",
             "--debounce", "0.05"],
            stdout=log, stderr=log, cwd=ROOT,
        )
        log.close()
        self.wait(lambda: (self.tmp / "controlplane.log").read_text().count("ready;") > start,
                  "the control plane to start", proc=self.cp)

    def stop(self) -> None:
        for p in (self.gw, self.cp):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.gw_log.close()
        self.v1.stop()
        self.v2.stop()

    # -- helpers
    def cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, "--api", f"127.0.0.1:{self.api_port}", "--state-dir", str(self.state)])
        return code, out.getvalue(), err.getvalue()

    def set_split(self, w1: int, w2: int) -> None:
        (self.tmp / "vs.yaml").write_text(VS.format(w1=w1, w2=w2))

    def get(self, path: str = "/reviews") -> tuple[int, str]:
        c = http.client.HTTPConnection("127.0.0.1", self.gw_port, timeout=5)
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            return r.status, r.getheader("x-upstream") or ""
        except OSError:
            return 0, ""
        finally:
            c.close()

    def status(self) -> dict:
        code, out, err = self.cli("proxy-status", "-o", "json")
        assert code == 0, err
        rows = json.loads(out)
        return rows[0] if rows else {}

    def wait(self, cond, what: str, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"process exited while waiting for {what}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; gateway log:\n{(self.tmp / 'gateway.log').read_text()}")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("e2e"))
    yield m
    m.stop()


class Load:
    """Requests through the gateway in a loop, on a keep-alive connection (reopened when the
    server closes it), recording every outcome."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/reviews")
                r = conn.getresponse()
                r.read()
                self.results.append((r.status, r.getheader("x-upstream") or ""))
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                conn.close()
                conn = None

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


def test_apply_changes_a_live_split_with_no_failed_request(mesh):
    assert {mesh.get()[1] for _ in range(10)} == {"v1"}
    load = Load(mesh.gw_port)
    try:
        mesh.set_split(0, 100)
        code, out, _ = mesh.cli("apply", "-f", str(mesh.tmp / "vs.yaml"))
        assert code == 0 and "virtualservice.networking.istio.io/reviews configured" in out
        mesh.wait(lambda: load.results and load.results[-1][1] == "v2", "traffic to move to v2")
        n = len(load.results)
        mesh.wait(lambda: len(load.results) > n + 20, "more requests")
        assert {u for _, u in load.results[n:]} == {"v2"}
        mesh.set_split(50, 50)
        assert mesh.cli("apply", "-f", str(mesh.tmp / "vs.yaml"))[0] == 0
        n = len(load.results)
        mesh.wait(lambda: {"v1", "v2"} <= {u for _, u in load.results[n:]}, "a 50/50 split")
    finally:
        load.stop()
    assert load.errors == []
    assert len(load.results) > 20
    assert {s for s, _ in load.results} == {200}


def test_proxy_status_config_and_explain_of_a_live_proxy(mesh):
    mesh.wait(lambda: mesh.status().get("state") == "SYNCED", "SYNCED")
    code, out, _ = mesh.cli("proxy-status")
    assert code == 0
    row = re.split(r"\s{3,}", out.splitlines()[1])
    assert row[:6] == ["ingress-1.default", "local", "SYNCED", "SYNCED", "SYNCED", "SYNCED"]
    code, out, _ = mesh.cli("proxy-config", "routes", "ingress-1")
    assert f"http.{mesh.gw_port}" in out and "reviews.default" in out
    code, out, _ = mesh.cli("proxy-config", "clusters", "ingress-1.default", "--fqdn", "reviews")
    lines = [re.split(r"\s{3,}", x) for x in out.splitlines()]
    assert lines[0] == ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]
    assert ["reviews.default.svc.cluster.local", "9080", "v2", "outbound", "EDS", "reviews.default"] in lines
    code, out, _ = mesh.cli("proxy-config", "endpoints", "ingress-1", "--fqdn", "reviews")
    assert f"127.0.0.1:{mesh.v2.port}" in out
    code, out, err = mesh.cli("explain", "ingress-1", "GET", f"http://bookinfo.example.com:{mesh.gw_port}/reviews")
    assert code == 0, err
    assert f"from VirtualService default/reviews {mesh.tmp / 'vs.yaml'}:" in out
    assert f"DestinationRule default/reviews {mesh.tmp / 'mesh.yaml'}:" in out
    assert "50% (weight 50)  outbound|9080|v1|reviews.default.svc.cluster.local" in out
    assert f"127.0.0.1:{mesh.v1.port}" in out
    code, out, _ = mesh.cli("explain", "ingress-1", "GET", f"http://x:{mesh.gw_port}/", "-o", "json")
    doc = json.loads(out)
    assert doc["outcome"]["status"] == 200 and len(doc["destinations"]) == 2


def test_a_rejected_snapshot_is_NACKED_and_the_old_one_keeps_serving(mesh, tmp_path):
    # a second Gateway server on a port something else holds: the proxy cannot bind it
    bad = tmp_path / "gw2.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw2\nspec:\n"
        "  selector: {istio: ingressgateway}\n  servers:\n"
        f"  - port: {{number: {mesh.v1.port}, name: http2, protocol: HTTP}}\n    hosts: ['*']\n"
    )
    assert mesh.cli("apply", "-f", str(bad))[0] == 0
    mesh.wait(lambda: mesh.status().get("state") == "NACKED", "NACKED")
    st = mesh.status()
    assert "Address already in use" in st["nack"] or "cannot bind" in st["nack"]
    code, out, _ = mesh.cli("proxy-status")
    assert "NACKED" in out and "cannot bind" in out
    assert mesh.get()[0] == 200  # still serving the version it acknowledged
    code, out, _ = mesh.cli("explain", "ingress-1", "GET", f"http://x:{mesh.gw_port}/")
    assert code == 0 and "the proxy REJECTED version" in out
    assert mesh.cli("delete", "-f", str(bad))[0] == 0
    mesh.wait(lambda: mesh.status().get("state") == "SYNCED", "SYNCED again")


def test_killing_the_control_plane_leaves_traffic_flowing(mesh):
    mesh.set_split(100, 0)
    assert mesh.cli("apply", "-f", str(mesh.tmp / "vs.yaml"))[0] == 0
    # 30 in a row: with the previous split still in force, 5 in a row happened by chance
    mesh.wait(lambda: all(mesh.get()[1] == "v1" for _ in range(30)), "traffic on v1")
    mesh.cp.kill()
    mesh.cp.wait()
    for _ in range(20):
        assert mesh.get() == (200, "v1")
    code, _, err = mesh.cli("get", "vs")
    assert code == 1 and "cannot reach the control plane" in err
    # back: the config survived, the proxy reconnects, and changes flow again
    mesh.start_controlplane()
    # the proxy's reconnect backoff grows to 5 s while the control plane is away: allow for it
    mesh.wait(lambda: mesh.status().get("connected") is True, "the proxy to reconnect", timeout=30)
    mesh.set_split(0, 100)
    assert "configured" in mesh.cli("apply", "-f", str(mesh.tmp / "vs.yaml"))[1]
    mesh.wait(lambda: mesh.get()[1] == "v2", "traffic on v2 after the restart", timeout=30)
