"""The control plane's HTTP API, against a real ``pilotfish controlplane`` process."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BOOKINFO = Path("/work/shared/istio/bookinfo")
ROOT = Path(__file__).resolve().parents[2]

BAD_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: good-in-bad-apply
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: -1
"""


class ControlPlane:
    """A ``pilotfish controlplane`` subprocess on ephemeral ports, with its own state dir."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.log = state.parent / f"{state.name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.start()

    def start(self) -> None:
        self._logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pilotfish", "controlplane", "--state-dir", str(self.state),
             "--api-address", "127.0.0.1:0", "--discovery-address", "127.0.0.1:0"],
            stdout=self._logf, stderr=self._logf, cwd=ROOT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = self.log.read_text()
            m = list(re.finditer(r"ready; api http://127\.0\.0\.1:(\d+) discovery (\S+)", text))
            if m and len(m) > getattr(self, "_starts", 0):
                self._starts = len(m)
                self.port = int(m[-1].group(1))
                self.discovery = m[-1].group(2)
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"controlplane exited: {text}")
            time.sleep(0.05)
        raise RuntimeError(f"controlplane did not start: {self.log.read_text()}")

    @property
    def token(self) -> str:
        return (self.state / "token").read_text().strip()

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def call(self, method: str, path: str, body=None, token: str | None = "default",
             headers: dict | None = None) -> tuple[int, dict, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = dict(headers or {})
        if token == "default":
            token = self.token
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            if isinstance(body, (bytes, str)):
                data = body.encode() if isinstance(body, str) else body
            else:
                data = json.dumps(body).encode()
                h.setdefault("content-type", "application/json")
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            raw = r.read()
            return r.status, json.loads(raw) if raw else {}, dict(r.getheaders())
        finally:
            conn.close()


def files(*paths: Path | tuple[str, str]) -> dict:
    out = []
    for p in paths:
        if isinstance(p, tuple):
            out.append({"name": p[0], "content": p[1]})
        else:
            out.append({"name": str(p), "content": p.read_text()})
    return {"files": out}


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    c = ControlPlane(tmp_path_factory.mktemp("cp") / "state")
    yield c
    c.stop()


def test_token_file_is_private_and_required(cp):
    assert (os.stat(cp.state / "token").st_mode & 0o777) == 0o600
    assert len(cp.token) >= 32
    status, body, headers = cp.call("GET", "/api/v1/version", token=None)
    assert status == 401 and "unauthorized" in body["error"]
    assert headers.get("www-authenticate", "").startswith("Bearer")
    assert cp.call("GET", "/api/v1/vs", token="wrong")[0] == 401
    assert cp.call("GET", "/healthz", token=None)[0] == 200
    status, body, _ = cp.call("GET", "/api/v1/version")
    assert status == 200 and "resourceVersion" in body


def test_apply_bookinfo_created_then_unchanged(cp):
    req = files(BOOKINFO / "bookinfo.yaml", BOOKINFO / "destination-rule-all.yaml")
    status, body, _ = cp.call("POST", "/api/v1/apply", req)
    assert status == 200, body
    got = {(r["resource"], r["name"]): r["action"] for r in body["results"]}
    assert got[("service", "reviews")] == "created"
    assert got[("deployment.apps", "reviews-v2")] == "created"
    assert got[("destinationrule.networking.istio.io", "reviews")] == "created"
    assert set(got.values()) == {"created"}
    status, body, _ = cp.call("POST", "/api/v1/apply", req)
    assert status == 200
    assert {r["action"] for r in body["results"]} == {"unchanged"}


def test_apply_raw_yaml_with_filename(cp):
    text = (BOOKINFO / "virtual-service-reviews-v3.yaml").read_text()
    status, body, _ = cp.call("POST", "/api/v1/apply?filename=v3.yaml", text, headers={"content-type": "application/yaml"})
    assert status == 200, body
    assert body["results"][0]["action"] in ("created", "configured")
    status, body, _ = cp.call("GET", "/api/v1/namespaces/default/vs/reviews")
    assert status == 200
    assert body["source"] == "v3.yaml:1"
    assert body["object"]["metadata"]["resourceVersion"]


def test_invalid_apply_is_refused_whole_with_field_and_line(cp):
    status, body, _ = cp.call("POST", "/api/v1/apply", files(("bad-vs.yaml", BAD_VS)))
    assert status == 400
    assert "nothing changed" in body["error"]
    [issue] = [i for i in body["issues"] if i["level"] == "Error"]
    assert issue["path"] == "spec.http[0].route[0].weight"
    assert issue["file"] == "bad-vs.yaml" and issue["line"] == 22
    assert "VirtualService default/reviews (bad-vs.yaml:22): spec.http[0].route[0].weight" in issue["text"]
    # the valid document of the same apply was not stored
    assert cp.call("GET", "/api/v1/namespaces/default/vs/good-in-bad-apply")[0] == 404


def test_unparsable_yaml_is_refused_with_line(cp):
    status, body, _ = cp.call("POST", "/api/v1/apply", files(("broken.yaml", "kind: Service\nmetadata: [a\n")))
    assert status == 400
    assert body["issues"][0]["file"] == "broken.yaml"
    assert body["issues"][0]["line"]


def test_get_list_kubectl_kind_names(cp):
    for kind in ("dr", "destinationrules", "DestinationRule", "destinationrule.networking.istio.io"):
        status, body, _ = cp.call("GET", f"/api/v1/namespaces/default/{kind}")
        assert status == 200, kind
        assert {o["metadata"]["name"] for o in body["items"]} == {"productpage", "reviews", "ratings", "details"}
    status, body, _ = cp.call("GET", "/api/v1/svc")
    assert body["resource"]["kind"] == "Service" and len(body["items"]) == 4
    assert all(s.endswith(".yaml:" + s.rsplit(":", 1)[1]) for s in body["sources"])
    status, body, _ = cp.call("GET", "/api/v1/deploy?namespace=nope")
    assert status == 200 and body["items"] == []
    status, body, _ = cp.call("GET", "/api/v1/nosuchkind")
    assert status == 404 and 'resource type "nosuchkind"' in body["error"]
    status, body, _ = cp.call("GET", "/api/v1/namespaces/default/vs/missing")
    assert status == 404 and body["reason"] == "NotFound"


def test_delete_by_name_and_by_documents(cp):
    assert cp.call("POST", "/api/v1/apply", files(("se.yaml", SE)))[0] == 200
    status, body, _ = cp.call("DELETE", "/api/v1/namespaces/default/se/httpbin-ext")
    assert status == 200 and body["results"][0]["action"] == "deleted"
    assert cp.call("DELETE", "/api/v1/namespaces/default/se/httpbin-ext")[0] == 404
    assert cp.call("POST", "/api/v1/apply", files(("se.yaml", SE)))[0] == 200
    status, body, _ = cp.call("POST", "/api/v1/delete", files(("se.yaml", SE + "---\n" + SE.replace("httpbin-ext", "other"))))
    assert status == 200
    assert [(r["name"], r["action"]) for r in body["results"]] == [("httpbin-ext", "deleted"), ("other", "not found")]


def test_bad_requests_get_json_errors(cp):
    status, body, _ = cp.call("POST", "/api/v1/apply", b"{not json", headers={"content-type": "application/json"})
    assert status == 400 and "error" in body
    assert cp.call("GET", "/api/v1/apply")[0] == 405
    assert cp.call("POST", "/api/v1/apply", files())[0] == 400  # no documents
    assert cp.call("GET", "/nothing-here")[0] == 404
    big = b"x" * (17 * 1024 * 1024)
    status, body, _ = cp.call("POST", "/api/v1/apply", big, headers={"content-type": "application/yaml"})
    assert status == 413 and "too large" in body["error"]
    # still serving
    assert cp.call("GET", "/api/v1/version")[0] == 200


def test_proxies_and_analyze(cp):
    status, body, _ = cp.call("GET", "/api/v1/proxies")
    assert status == 200 and body["proxies"] == [] and body["discovery"] is True
    status, body, _ = cp.call("GET", "/api/v1/proxies/productpage/config")
    assert status == 404 and "no proxy 'productpage'" in body["error"]
    status, body, _ = cp.call("POST", "/api/v1/proxies/productpage/explain", {"method": "GET", "url": "http://reviews:9080/"})
    assert status == 404
    status, body, _ = cp.call("GET", "/api/v1/analyze")
    assert status == 200 and isinstance(body["messages"], list) and body["executed"]
    for m in body["messages"]:
        assert re.match(r"(Error|Warning|Info) \[IST\d{4}\]", m["text"])


def test_restart_keeps_the_configuration(cp):
    before = cp.call("GET", "/api/v1/dr")[1]["items"]
    token = cp.token
    cp.restart()
    assert cp.token == token  # the token file is reused
    after = cp.call("GET", "/api/v1/dr")[1]["items"]
    assert [o["metadata"] for o in after] == [o["metadata"] for o in before]
    status, body, _ = cp.call("POST", "/api/v1/apply", files(BOOKINFO / "destination-rule-all.yaml"))
    assert {r["action"] for r in body["results"]} == {"unchanged"}


def test_second_control_plane_on_the_same_state_is_refused(cp):
    p = subprocess.run(
        [sys.executable, "-m", "pilotfish", "controlplane", "--state-dir", str(cp.state),
         "--api-address", "127.0.0.1:0", "--discovery-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=20, cwd=ROOT,
    )
    assert p.returncode == 1
    assert "in use by another Pilotfish process" in p.stderr


SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin-ext
spec:
  hosts: [httpbin.org]
  location: MESH_EXTERNAL
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
"""


def test_one_generation_per_change_set_and_a_failed_build_keeps_the_last(tmp_path):
    """In process: the control plane rebuilds once per apply (however many objects), pushes,
    computes against that generation, and keeps the last good generation when a build fails."""
    import asyncio

    from pilotfish.api.loader import load_paths
    from pilotfish.config import Store
    from pilotfish.controlplane.server import ControlPlane
    from pilotfish.proxy import model

    class Discovery:
        def __init__(self) -> None:
            self.reasons: list[str] = []

        def request_push(self, reason: str) -> None:
            self.reasons.append(reason)

    async def scenario() -> None:
        cp = ControlPlane(tmp_path, "token", store=Store())
        await cp.start(("127.0.0.1", 0), None)
        try:
            d = cp.discovery = Discovery()
            g0 = cp.generation
            docs = load_paths([str(BOOKINFO / "bookinfo.yaml"), str(BOOKINFO / "destination-rule-all.yaml")])
            assert len(docs) > 10
            await asyncio.to_thread(cp.store.apply, docs)
            await asyncio.sleep(0.05)
            assert len(d.reasons) == 1
            g1 = cp.generation
            assert g1 is not g0 and g1.resource_version == cp.store.resource_version
            node = model.Node(id="sidecar~10.0.0.2~productpage-1.default~default.svc.cluster.local",
                              role="sidecar", name="productpage-1", namespace="default",
                              labels={"app": "productpage"})
            cfg = cp.compute(node)
            assert any(c.name == "outbound|9080|v1|reviews.default.svc.cluster.local" for c in cfg.clusters)

            class Broken:
                @staticmethod
                def build(objects):
                    raise ValueError("boom")

            cp._view_cls = Broken
            await asyncio.to_thread(cp.store.delete, "dr", "default", "ratings")
            await asyncio.sleep(0.05)
            assert cp.generation is g1 and len(d.reasons) == 1
            assert "boom" in cp.build_error
            assert "boom" in cp.status()["generation"]["error"]
        finally:
            cp.discovery = None
            await cp.close()

    asyncio.run(scenario())
