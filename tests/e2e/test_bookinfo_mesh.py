"""End to end: `pilotfish up -d`, bookinfo, and Istio's own traffic-management files.

One mesh serves the whole module (the tests run in file order and build on each other, as the
Istio tasks do): a real ``pilotfish up -d`` with a temporary state directory, its own bridge,
CIDRs and ports, so it never meets a mesh already running on the machine. Istio's files are
read at run time from ``../shared/istio/bookinfo/`` (never copied). The module ends with a
crash (SIGKILL of the mesh), a second ``up`` that cleans up after it, and ``pilotfish down``,
which must leave nothing behind.

Needs root (network namespaces, iptables); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from proxyutil import free_port

ROOT = Path(__file__).resolve().parents[2]
ISTIO = (ROOT / ".." / "shared" / "istio" / "bookinfo").resolve()
BOOKINFO = ROOT / "samples" / "bookinfo" / "platform" / "bookinfo.yaml"

BRIDGE = "pfe2e0"
PREFIX = "pfe2e"
POD_CIDR = "10.247.0.0/16"
SERVICE_CIDR = "10.98.0.0/16"


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root: pods run in network namespaces with iptables interception"
    if not BOOKINFO.exists():
        return f"the bookinfo sample is missing ({BOOKINFO})"
    if not ISTIO.is_dir():
        return f"Istio's bookinfo files are missing ({ISTIO})"
    from pilotfish.runtime.network import available

    ok, why = available()
    return None if ok else f"network namespaces are not usable here: {why}"


_SKIP = _why_skip()
pytestmark = [pytest.mark.root, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

STAR = re.compile(r'class="glyphicon glyphicon-star (text-[a-z]+-\d+)"')



class Mesh:
    """The mesh under test: a `pilotfish up -d` subprocess and helpers to talk to it."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.api = free_port()
        self.disc = free_port()
        self.gw = free_port()
        self.up_seconds = 0.0

    # -- processes
    def up(self) -> subprocess.CompletedProcess:
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "pilotfish", "up", "-d", "--state-dir", str(self.state),
             "--api-address", f"127.0.0.1:{self.api}", "--discovery-port", str(self.disc),
             "--port-map", f"8080:{self.gw}", "--bridge", BRIDGE, "--netns-prefix", PREFIX,
             "--pod-cidr", POD_CIDR, "--service-cidr", SERVICE_CIDR, "--wait-timeout", "60",
             "--backoff-base", "1"],
            cwd=ROOT, capture_output=True, text=True, timeout=150)
        self.up_seconds = time.monotonic() - t0
        return r

    def down(self) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pilotfish", "down", "--state-dir", str(self.state)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    def pid(self) -> int:
        return int((self.state / "up.pid").read_text())

    # -- the CLI, in process
    def cli(self, *argv: str) -> tuple[int, str, str]:
        from pilotfish.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            api = [] if argv[0] == "logs" else ["--api", f"127.0.0.1:{self.api}"]
            code = main([*argv, *api, "--state-dir", str(self.state)])
        return code, out.getvalue(), err.getvalue()

    def apply(self, *paths: Path, sync: bool = True) -> str:
        """``pilotfish apply``; then, if something changed, wait until the proxies have what
        the change means for them (so that traffic follows it)."""
        args = [a for p in paths for a in ("-f", str(p))]
        code, out, err = self.cli("apply", *args)
        assert code == 0, out + err
        if sync and (" created" in out or " configured" in out):
            self.wait_synced()
        return out

    def wait_synced(self, timeout: float = 15.0) -> None:
        """The control plane built a generation with everything applied so far, its push
        (debounced) has had time to go out, and every proxy acknowledged what it was sent."""
        from pilotfish.cli.client import Client

        client = Client("127.0.0.1", self.api, (self.state / "token").read_text().strip())
        rv = client.version()["resourceVersion"]
        deadline = time.monotonic() + timeout
        while True:
            gen = client.version()["generation"]
            rows = client.proxies()["proxies"]
            if (gen["resourceVersion"] >= rv and time.time() > gen["builtAt"] + 0.5
                    and all(r.get("state") == "SYNCED" for r in rows if r.get("connected"))):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"proxies not synced within {timeout}s: {gen} {rows}")
            time.sleep(0.05)

    def pods(self) -> list[dict]:
        code, out, err = self.cli("get", "pods", "-A", "-o", "json")
        assert code == 0, err
        return json.loads(out)["items"]

    def wait_pods_ready(self, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            code, out, _ = self.cli("get", "deploy", "-o", "json")
            deps = json.loads(out)["items"] if code == 0 else []
            done = deps and all(
                (d.get("status") or {}).get("readyReplicas") == d["spec"].get("replicas", 1)
                and (d.get("status") or {}).get("updatedReplicas") == d["spec"].get("replicas", 1)
                and (d.get("status") or {}).get("replicas") == d["spec"].get("replicas", 1) for d in deps)
            if done:
                return [p for p in self.pods() if p["metadata"]["namespace"] == "default"]
            if time.monotonic() > deadline:
                raise AssertionError(f"pods not ready after {timeout}s:\n{self.cli('get', 'pods', '-A')[1]}")
            time.sleep(0.2)

    # -- HTTP through the gateway
    def request(self, method: str, path: str, body: str | None = None, cookie: str | None = None,
                timeout: float = 30.0) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.gw, timeout=timeout)
        headers = {}
        if cookie:
            headers["Cookie"] = cookie
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def page(self, cookie: str | None = None) -> str:
        status, _, body = self.request("GET", "/productpage", cookie=cookie)
        assert status == 200, (status, body[:500])
        return body

    def wait_page(self, pred, cookie: str | None = None, timeout: float = 15.0) -> str:
        """The first page (within ``timeout``) for which ``pred(page)`` holds: config pushes
        take a moment to reach every proxy."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                body = self.page(cookie)
                if pred(body):
                    return body
            except (OSError, AssertionError, http.client.HTTPException):
                body = ""
            if time.monotonic() > deadline:
                raise AssertionError(f"no page matched within {timeout}s; last page:\n{body[:3000]}")
            time.sleep(0.2)

    def login(self, user: str) -> str:
        status, headers, body = self.request("POST", "/login", body=urlencode({"username": user}))
        assert status in (200, 302, 303), (status, body[:300])
        cookie = headers.get("set-cookie", "")
        assert cookie, headers
        return cookie.split(";", 1)[0]


def stars(page: str) -> set[str]:
    """The colours of the filled stars on a page (text-black-500, text-red-500)."""
    return set(STAR.findall(page))


def has_any_star(page: str) -> bool:
    return "glyphicon-star" in page


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("mesh") / "state")
    r = m.up()
    try:
        assert r.returncode == 0, f"pilotfish up -d failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        yield m
    finally:
        with contextlib.suppress(Exception):
            m.down()
        with contextlib.suppress(OSError, ValueError):  # a test failed half-way: no leftovers
            os.kill(m.pid(), signal.SIGKILL)
        with contextlib.suppress(Exception):
            from pilotfish.runtime.network import cleanup_stale

            cleanup_stale(m.state / "network")


# --------------------------------------------------------------------------- tests, in order


def test_up_reports_the_mesh(mesh):
    assert (mesh.state / "up.pid").exists()
    info = json.loads((mesh.state / "up.json").read_text())
    assert info["mode"] == "netns" and info["state"] == "ready"
    code, out, _ = mesh.cli("get", "pods", "-n", "istio-system")
    assert code == 0 and re.search(r"istio-ingressgateway-\S+\s+1/1\s+Running\s+0\s", out), out


def test_bookinfo_pods_run_with_sidecars(mesh):
    t0 = time.monotonic()
    mesh.apply(BOOKINFO)
    pods = mesh.wait_pods_ready()
    print(f"bookinfo pods ready {time.monotonic() - t0:.1f}s after apply (up -d took {mesh.up_seconds:.1f}s)")
    assert len(pods) == 6
    for p in pods:
        names = [c["name"] for c in p["spec"]["containers"]]
        assert names[-1] == "istio-proxy", names
        assert p["status"]["podIP"].startswith("10.247."), p["status"]
        assert {c["ready"] for c in p["status"]["containerStatuses"]} == {True}
        assert p["metadata"]["labels"]["pod-template-hash"] in p["metadata"]["name"]
    code, out, _ = mesh.cli("get", "pods")
    rows = [ln.split() for ln in out.splitlines()[1:]]
    assert out.split()[:6] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    assert {r[1] for r in rows} == {"2/2"} and {r[2] for r in rows} == {"Running"}, out
    code, out, _ = mesh.cli("get", "svc")
    assert out.split()[:6] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    ips = {ln.split()[0]: ln.split()[2] for ln in out.splitlines()[1:]}
    assert set(ips) == {"details", "productpage", "ratings", "reviews"}
    assert all(ip.startswith("10.98.") for ip in ips.values()), out
    code, out, _ = mesh.cli("get", "deploy")
    assert out.split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert [ln.split()[1:4] for ln in out.splitlines()[1:]] == [["1/1", "1", "1"]] * 6, out
    # ClusterIPs are kept when the same file is applied again (which then changes nothing)
    out = mesh.apply(BOOKINFO)
    assert "configured" not in out and "created" not in out, out
    again = {ln.split()[0]: ln.split()[2] for ln in mesh.cli("get", "svc")[1].splitlines()[1:]}
    assert again == ips


def test_analyze_bookinfo_reports_nothing(mesh):
    mesh.apply(ISTIO / "bookinfo-gateway.yaml")
    code, out, err = mesh.cli("analyze")
    assert code == 0 and out == "", out + err
    assert "No validation issues found" in err
    # our sample's DestinationRules name only the subsets it deploys: still clean
    ours = ROOT / "samples" / "bookinfo" / "networking" / "destination-rule-all.yaml"
    mesh.apply(ours)
    code, out, err = mesh.cli("analyze")
    assert code == 0 and out == "", out + err
    code, out, err = mesh.cli("delete", "-f", str(ours))
    assert code == 0, out + err


def test_productpage_through_the_gateway(mesh):
    page = mesh.wait_page(lambda p: "The Comedy of Errors" in p)
    assert "Error fetching" not in page and "unavailable" not in page, page
    status, _, _ = mesh.request("GET", "/no-such-page")
    assert status == 404


def test_analyze_subset_without_destination_rule_is_IST0101(mesh):
    mesh.apply(ISTIO / "virtual-service-all-v1.yaml")
    code, out, err = mesh.cli("analyze")
    assert code == 79, out + err
    assert "IST0101" in out and "reviews+v1" in out, out
    mesh.apply(ISTIO / "destination-rule-all.yaml")
    code, out, err = mesh.cli("analyze")
    assert "IST0101" not in out, out


def test_all_v1_never_shows_stars(mesh):
    mesh.wait_page(lambda p: "Error fetching" not in p and not has_any_star(p))
    for _ in range(10):
        page = mesh.page()
        assert not has_any_star(page), page
        assert "Error fetching" not in page and "unavailable" not in page


def test_reviews_test_v2_black_stars_for_jason(mesh):
    mesh.apply(ISTIO / "virtual-service-reviews-test-v2.yaml")
    jason = mesh.login("jason")
    page = mesh.wait_page(lambda p: stars(p) == {"text-black-500"}, cookie=jason)
    assert "jason" in page
    for _ in range(5):
        assert stars(mesh.page(jason)) == {"text-black-500"}
        assert not has_any_star(mesh.page())
    other = mesh.login("alice")
    assert not has_any_star(mesh.page(other))


def test_reviews_50_v3_half_red_stars(mesh):
    mesh.apply(ISTIO / "virtual-service-reviews-50-v3.yaml")
    mesh.wait_page(lambda p: stars(p) == {"text-red-500"})
    red = none = 0
    for _ in range(100):
        s = stars(mesh.page())
        if s == {"text-red-500"}:
            red += 1
        elif not s:
            none += 1
        else:
            raise AssertionError(f"unexpected stars {s}")
    print(f"reviews 50/50 v1/v3: {red} red, {none} without stars")
    assert red + none == 100 and 25 <= red <= 75, (red, none)


def test_ratings_delay_makes_reviews_unavailable_for_jason(mesh):
    mesh.apply(ISTIO / "virtual-service-reviews-test-v2.yaml", ISTIO / "virtual-service-ratings-test-delay.yaml")
    jason = mesh.login("jason")
    time.sleep(1.0)  # let the change reach every proxy
    t0 = time.monotonic()
    page = mesh.page(jason)
    took = time.monotonic() - t0
    assert "Sorry, product reviews are currently unavailable for this book." in page, page
    assert 5.0 <= took <= 9.0, took
    t0 = time.monotonic()
    page = mesh.page()  # everyone else: no delay
    assert time.monotonic() - t0 < 2.0 and "unavailable" not in page


def test_ratings_abort_for_jason(mesh):
    mesh.apply(ISTIO / "virtual-service-ratings-test-abort.yaml")
    jason = mesh.login("jason")
    page = mesh.wait_page(lambda p: "Ratings service is currently unavailable" in p, cookie=jason)
    assert "Sorry, product reviews are currently unavailable" not in page
    assert "Ratings service is currently unavailable" not in mesh.page()


def test_logs_show_apps_and_sidecar_access_logs(mesh):
    pod = next(p["metadata"]["name"] for p in mesh.pods() if p["metadata"]["name"].startswith("productpage-v1-"))
    code, out, err = mesh.cli("logs", pod)
    assert code == 0 and "GET /productpage" in out, err
    code, out, err = mesh.cli("logs", pod, "-c", "istio-proxy", "--tail", "200")
    assert code == 0, err
    assert '"GET /reviews/0 HTTP/1.1"' in out and "outbound|9080|" in out, out[-2000:]
    assert '"GET /productpage HTTP/1.1"' in out and "inbound|9080||" in out
    code, out, err = mesh.cli("logs", pod, "-c", "nope")
    assert code == 1 and "istio-proxy" in err


def test_changed_template_rolls_the_pods(mesh):
    before = {p["metadata"]["name"] for p in mesh.pods() if p["metadata"]["name"].startswith("details-v1-")}
    text = BOOKINFO.read_text()
    start = text.index("kind: Deployment\nmetadata:\n  name: details-v1")
    doc = text[start:text.index("\n---", start)]
    changed = ("apiVersion: apps/v1\n" + doc).replace(
        "      - name: details\n", "      - name: details\n        env:\n        - {name: ROLLED, value: \"yes\"}\n")
    assert "ROLLED" in changed
    path = mesh.state / "details-rolled.yaml"
    path.write_text(changed)
    mesh.apply(path)
    deadline = time.monotonic() + 60
    saw_old_gone_before_new_ready = False
    while True:
        pods = [p for p in mesh.pods() if p["metadata"]["name"].startswith("details-v1-")]
        ready = [p for p in pods if all(c["ready"] for c in p["status"].get("containerStatuses") or [{}])
                 and p["status"].get("containerStatuses")]
        if not any(p["metadata"]["name"] in before for p in pods) and not ready:
            saw_old_gone_before_new_ready = True
        names = {p["metadata"]["name"] for p in pods}
        if len(pods) == 1 and not names & before and ready:
            break
        assert time.monotonic() < deadline, pods
        time.sleep(0.1)
    assert not saw_old_gone_before_new_ready, "the old pod was stopped before the new one was ready"
    page = mesh.page()
    assert "Error fetching product details" not in page


def test_crash_then_up_cleans_up_then_down_leaves_nothing(mesh):
    # the mesh dies without stopping: its pods, sidecars, gateway and network stay behind
    crashed = [p["metadata"]["name"] for p in mesh.pods() if p["metadata"]["namespace"] == "default"]
    assert _sidecar_dirs(crashed)
    os.kill(mesh.pid(), signal.SIGKILL)
    time.sleep(0.5)
    assert _netns() and _links()
    r = mesh.up()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cleaned up after a previous run" in r.stdout, r.stdout
    assert _sidecar_dirs(crashed) == []
    pods = mesh.wait_pods_ready()  # the configuration survived: bookinfo runs again
    mesh.wait_page(lambda p: "The Comedy of Errors" in p, timeout=30)
    pid = mesh.pid()
    started = _netns_pids() + [int(p) for p in json.loads((mesh.state / "pids.json").read_text())["pids"]]
    assert len(started) >= 13, started  # 6 apps, 6 sidecars, the gateway
    r = mesh.down()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing left behind" in r.stdout
    # check for ourselves
    assert not _alive(pid)
    assert _netns() == [] and _links() == []
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert BRIDGE not in rules, rules
    assert [p for p in started if _alive(p)] == []
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert str(mesh.state) not in ps, ps
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", mesh.api, timeout=2).connect()
    assert not (mesh.state / "up.pid").exists()
    assert _sidecar_dirs([p["metadata"]["name"] for p in pods]) == []


def _sidecar_dirs(pods: list[str]) -> list[Path]:
    """The sidecars' private directories (their token copies) of these pods."""
    import glob
    import tempfile

    base = f"{tempfile.gettempdir()}/pilotfish-sidecars-{os.getuid()}"
    return [Path(d) for name in pods for d in glob.glob(f"{base}/{glob.escape(f'default_{name}'[:60])}-*")]


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(PREFIX + "-")]


def _netns_pids() -> list[int]:
    out: list[int] = []
    for ns in _netns():
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        out += [int(x) for x in r.stdout.split()]
    return out


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines() if ":" in ln]
    return [n for n in names if n == BRIDGE or n.startswith(PREFIX + "v")]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that does not reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
