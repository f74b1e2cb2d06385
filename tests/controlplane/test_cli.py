"""The CLI (apply, delete, get, proxy-status) against a real ``pilotfish controlplane`` process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pilotfish.cli.get_cmd import age
from pilotfish.cli.main import main

BOOKINFO = Path("/work/shared/istio/bookinfo")
ROOT = Path(__file__).resolve().parents[2]


class ControlPlane:
    """A ``pilotfish controlplane`` subprocess on ephemeral ports, with its own state dir."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.log = state.parent / "controlplane.log"
        self.starts = 0
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
            found = re.findall(r"ready; api http://(127\.0\.0\.1:\d+)", self.log.read_text())
            if len(found) > self.starts:
                self.starts = len(found)
                self.api = found[-1]
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"controlplane exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"controlplane did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    c = ControlPlane(tmp_path_factory.mktemp("cli") / "state")
    yield c
    c.stop()


@pytest.fixture
def pf(cp, monkeypatch, capsys):
    """Run ``pilotfish ARGS...`` in this process against the control plane -> (code, out, err)."""
    monkeypatch.setenv("PILOTFISH_API", cp.api)
    monkeypatch.setenv("PILOTFISH_STATE", str(cp.state))
    monkeypatch.delenv("PILOTFISH_TOKEN", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        c = capsys.readouterr()
        return code, c.out, c.err

    return run


def rows(table: str) -> list[list[str]]:
    return [re.split(r"\s{3,}", line.strip()) for line in table.strip().splitlines()]


def test_apply_bookinfo_then_unchanged(pf):
    code, out, err = pf("apply", "-f", str(BOOKINFO / "bookinfo.yaml"), "-f", str(BOOKINFO / "destination-rule-all.yaml"))
    assert code == 0, err
    lines = out.splitlines()
    assert "service/reviews created" in lines
    assert "deployment.apps/reviews-v3 created" in lines
    assert "serviceaccount/bookinfo-reviews created" in lines
    assert "destinationrule.networking.istio.io/reviews created" in lines
    code, out, err = pf("apply", "-f", str(BOOKINFO / "bookinfo.yaml"))
    assert code == 0
    assert all(line.endswith(" unchanged") for line in out.splitlines())
    code, out, _ = pf("apply", "-f", str(BOOKINFO / "virtual-service-reviews-80-20.yaml"))
    assert out.strip() == "virtualservice.networking.istio.io/reviews created"
    code, out, _ = pf("apply", "-f", str(BOOKINFO / "virtual-service-reviews-90-10.yaml"))
    assert out.strip() == "virtualservice.networking.istio.io/reviews configured"


def test_invalid_document_refuses_the_whole_apply(pf, tmp_path):
    good = tmp_path / "a-good.yaml"
    good.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings\n"
                    "spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings}\n")
    bad = tmp_path / "b-bad.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: details\n"
                   "spec:\n  hosts: [details]\n  http:\n  - match:\n    - uri:\n        regex: '(unclosed'\n"
                   "    route:\n    - destination: {host: details}\n")
    code, out, err = pf("apply", "-f", str(tmp_path))
    assert code == 1
    assert out == ""
    assert "nothing changed" in err
    assert f"VirtualService default/details ({bad}:10): spec.http[0].match[0].uri.regex" in err
    code, _, err = pf("get", "vs", "ratings")
    assert code == 1 and 'virtualservices.networking.istio.io "ratings" not found' in err


def test_get_tables(pf):
    code, out, _ = pf("get", "vs")
    t = rows(out)
    assert t[0] == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert t[1][:2] == ["reviews", '["reviews"]']
    code, out, _ = pf("get", "dr")
    t = rows(out)
    assert t[0] == ["NAME", "HOST", "AGE"]
    assert ["reviews", "reviews"] == t[[r[0] for r in t].index("reviews")][:2]
    code, out, _ = pf("get", "svc", "-o", "wide")
    t = rows(out)
    assert t[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "SELECTOR", "AGE", "SOURCE"]
    reviews = next(r for r in t if r[0] == "reviews")
    assert reviews[1] == "ClusterIP" and reviews[4] == "9080/TCP" and reviews[5] == "app=reviews"
    assert reviews[7].startswith(str(BOOKINFO / "bookinfo.yaml") + ":")
    code, out, _ = pf("get", "deploy", "-A")
    t = rows(out)
    assert t[0][:2] == ["NAMESPACE", "NAME"] and ["default", "reviews-v2"] in [r[:2] for r in t]
    code, out, err = pf("get", "se")
    assert code == 0 and out == "" and "No resources found in default namespace." in err


def test_get_output_formats(pf):
    code, out, _ = pf("get", "dr", "reviews", "-o", "yaml")
    doc = yaml.safe_load(out)
    assert doc["kind"] == "DestinationRule" and [s["name"] for s in doc["spec"]["subsets"]] == ["v1", "v2", "v3"]
    code, out, _ = pf("get", "vs,dr", "-o", "json")
    doc = json.loads(out)
    assert doc["kind"] == "List" and {i["kind"] for i in doc["items"]} == {"VirtualService", "DestinationRule"}
    code, out, _ = pf("get", "dr", "-o", "name")
    assert "destinationrule.networking.istio.io/reviews" in out.splitlines()
    code, _, err = pf("get", "nosuchkind")
    assert code == 1 and 'resource type "nosuchkind"' in err


def test_serviceentry_columns_and_delete(pf, tmp_path):
    se = tmp_path / "se.yaml"
    se.write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: httpbin-ext\n"
                  "spec:\n  hosts: [httpbin.org]\n  location: MESH_EXTERNAL\n  ports:\n"
                  "  - {number: 80, name: http, protocol: HTTP}\n  resolution: DNS\n")
    assert pf("apply", "-f", str(se))[0] == 0
    code, out, _ = pf("get", "se")
    assert rows(out)[0] == ["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"]
    assert rows(out)[1][:4] == ["httpbin-ext", '["httpbin.org"]', "MESH_EXTERNAL", "DNS"]
    code, out, _ = pf("delete", "-f", str(se))
    assert code == 0 and out.strip() == 'serviceentry.networking.istio.io "httpbin-ext" deleted'
    code, out, err = pf("delete", "-f", str(se))
    assert code == 1 and "(NotFound)" in err
    assert pf("delete", "-f", str(se), "--ignore-not-found")[0] == 0
    assert pf("apply", "-f", str(se))[0] == 0
    code, out, _ = pf("delete", "se", "httpbin-ext", "-n", "default")
    assert code == 0 and out.strip() == 'serviceentry.networking.istio.io "httpbin-ext" deleted'
    code, _, err = pf("delete", "se", "httpbin-ext")
    assert code == 1 and 'serviceentries.networking.istio.io "httpbin-ext" not found' in err


def test_proxy_status_without_proxies(pf):
    code, out, err = pf("proxy-status")
    assert code == 0 and "No proxies" in err
    code, _, err = pf("proxy-config", "clusters", "productpage")
    assert code == 1 and "no proxy 'productpage'" in err
    code, _, err = pf("explain", "productpage", "GET", "http://reviews:9080/")
    assert code == 1 and "no proxy 'productpage'" in err


def test_token_and_address_errors(pf, monkeypatch, tmp_path):
    monkeypatch.setenv("PILOTFISH_TOKEN", "wrong")
    code, _, err = pf("get", "vs")
    assert code == 1 and "unauthorized" in err
    monkeypatch.setenv("PILOTFISH_STATE", str(tmp_path))  # no token file there
    monkeypatch.delenv("PILOTFISH_TOKEN")
    code, _, err = pf("get", "vs")
    assert code == 1 and "none found" in err
    code, _, err = pf("get", "vs", "--api", "127.0.0.1:1")
    assert code == 1 and "cannot reach the control plane at 127.0.0.1:1" in err
    code, _, err = pf("apply", "-f", str(tmp_path / "missing.yaml"))
    assert code == 1 and "does not exist" in err


def test_exit_code_from_a_real_cli_process(cp, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: x\n"
                   "spec:\n  hosts: [x]\n  http:\n  - route:\n    - destination: {host: x}\n      weight: -1\n")
    env = {"PILOTFISH_API": cp.api, "PILOTFISH_STATE": str(cp.state), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-m", "pilotfish", "apply", "-f", str(bad)], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=20)
    assert p.returncode == 1
    assert f"({bad}:10): spec.http[0].route[0].weight" in p.stderr


def test_restart_keeps_config(cp, pf, monkeypatch):
    _, before, _ = pf("get", "dr", "-o", "name")
    cp.stop()
    cp.start()
    monkeypatch.setenv("PILOTFISH_API", cp.api)  # a new ephemeral port
    _, after, _ = pf("get", "dr", "-o", "name")
    assert after == before and "destinationrule.networking.istio.io/reviews" in after


def test_age_format():
    import datetime as dt

    now = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
    assert age("2026-01-10T11:59:15Z", now) == "45s"
    assert age("2026-01-10T11:55:30Z", now) == "4m30s"
    assert age("2026-01-10T11:00:00Z", now) == "60m"
    assert age("2026-01-10T07:00:00Z", now) == "5h"
    assert age("2026-01-07T12:00:00Z", now) == "3d"
    assert age(None, now) == "<unknown>"
