"""PodRunner for real: pods in network namespaces with sidecars fed by a DiscoveryServer whose
compute() is the real translate() over a tiny view (a Service plus the pods' reported status),
a pod without sidecar reaching a ClusterIP through DNAT, crash-loop backoff, probes, stop
order, and explicit mode (no namespace, HTTP_PROXY).

Needs root (network namespaces, iptables, the proxy's uid 1337); skipped with the reason
otherwise. Names, bridges and CIDRs are unique per run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from proxyutil import HTTPBIN, ROOT

from pilotfish.api.loader import load_text
from pilotfish.controlplane.discovery import DiscoveryServer
from pilotfish.controlplane.translate import translate
from pilotfish.controlplane.view import ConfigView
from pilotfish.proxy import model
from pilotfish.registry import Registry
from pilotfish.runtime.network import NetworkError, PodNetwork
from pilotfish.runtime.pod import LoopbackAllocator, PodError, PodRunner, PodStatus, SidecarSpec

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces, iptables and uid 1337"),
    pytest.mark.skipif(not shutil.which("iptables") or not shutil.which("ip") or not shutil.which("setpriv"),
                       reason="needs iproute2, iptables and util-linux (setpriv)"),
]

TOKEN = "pod-test-token"
FAST = ["--discovery-backoff-max", "0.3"]


def unique_network(state_dir: Path) -> PodNetwork:
    tag = uuid.uuid4().hex[:4]
    for _ in range(20):
        a, b = random.randrange(200, 250), random.randrange(256)
        n = PodNetwork(state_dir, pod_cidr=f"10.{a}.{b}.0/24", bridge=f"ppd{tag}", prefix=f"p{tag}",
                       service_cidr=f"172.29.{b}.0/24")
        try:
            n.setup()
            return n
        except NetworkError:
            continue
    raise AssertionError("no free CIDR")


async def until(pred: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Recorder:
    """on_status for one pod: keeps every status with the time it came."""

    def __init__(self, on_change: Callable[[PodStatus], None] | None = None) -> None:
        self.history: list[tuple[float, PodStatus]] = []
        self.on_change = on_change

    def __call__(self, st: PodStatus) -> None:
        self.history.append((time.monotonic(), st))
        if self.on_change is not None:
            self.on_change(st)

    @property
    def last(self) -> PodStatus:
        return self.history[-1][1]

    def container(self, name: str):
        return next(c for c in self.last.containers if c.name == name)


class World:
    """A tiny controller: one Service plus the pods' reported addresses and readiness, turned
    into a view; compute(node) is translate() over it."""

    def __init__(self, vip: str) -> None:
        self.vip = vip
        self.pods: dict[str, tuple[dict[str, str], str | None, bool]] = {}
        self.server: DiscoveryServer | None = None

    def report(self, labels: dict[str, str]) -> Callable[[PodStatus], None]:
        def on_status(st: PodStatus) -> None:
            self.pods[st.name] = (labels, st.ip, st.ready and not st.deleted)
            if self.server is not None:
                self.server.request_push(f"pod {st.name}")
        return on_status

    def yaml(self) -> str:
        docs = [f"""\
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: default}}
spec:
  clusterIP: {self.vip}
  selector: {{app: httpbin}}
  ports: [{{name: http, port: 8000, targetPort: 8000}}]
"""]
        for name, (labels, ip, ready) in sorted(self.pods.items()):
            if not ip:
                continue
            docs.append(json.dumps({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": labels},
                "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8000, "name": "http"}]}]},
                "status": {"phase": "Running", "podIP": ip,
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
            }))
        return "\n---\n".join(docs)

    def compute(self, node: model.Node) -> model.ProxyConfig:
        view = ConfigView.build(load_text(self.yaml(), "world.yaml"))
        return translate(view, Registry.build(view), node)


HTTPBIN_SPEC = {
    "containers": [{
        "name": "httpbin",
        "command": [sys.executable, str(HTTPBIN)],
        "args": ["--host", "0.0.0.0", "--port", "8000", "--name", "$(POD_NAME)"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"containerPort": 8000, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/status/200", "port": "http"}, "periodSeconds": 1},
    }],
    "terminationGracePeriodSeconds": 5,
}
SLEEP_SPEC = {"containers": [{"name": "app", "command": [sys.executable, "-c", "import time; time.sleep(3600)"]}],
              "terminationGracePeriodSeconds": 5}

FETCH = ("import json,sys,urllib.request as u\n"
         "try:\n"
         "    r=u.urlopen(sys.argv[1],timeout=5); s,h,b=r.status,dict(r.headers),r.read().decode()\n"
         "except u.HTTPError as e:\n"
         "    s,h,b=e.code,dict(e.headers),e.read().decode()\n"
         "except OSError as e:\n"
         "    s,h,b=0,{},str(e)\n"
         "print(json.dumps({'status':s,'headers':{k.lower():v for k,v in h.items()},'body':b}))\n")


async def fetch(argv_prefix: list[str], url: str, env: dict[str, str] | None = None) -> dict:
    env = env or {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    r = await asyncio.to_thread(subprocess.run, [*argv_prefix, sys.executable, "-c", FETCH, url],
                                capture_output=True, text=True, timeout=20, env=env)
    return json.loads(r.stdout) if r.stdout.strip() else {"status": -1, "body": r.stderr}


async def environ(pid: int) -> dict[str, str]:
    """A process's environment (read again while empty: right after exec the kernel has not
    set it up yet)."""
    def read() -> dict[str, str]:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(x.decode().split("=", 1) for x in raw if b"=" in x)
    return await until(read, f"the environment of pid {pid}", 5)


# --------------------------------------------------------------------------- the mesh


def test_pods_with_sidecars_and_without(tmp_path):
    asyncio.run(asyncio.wait_for(_mesh(tmp_path), 50))


async def _mesh(tmp: Path) -> None:
    net = unique_network(tmp / "state")
    tag = uuid.uuid4().hex[:4]
    vip = str(net.service_cidr.network_address + 10)
    world = World(vip)
    server = DiscoveryServer(world.compute, TOKEN, debounce=0.02, max_debounce=0.2)
    world.server = server
    token = tmp / "token"
    token.write_text(TOKEN)
    os.chmod(token, 0o600)  # only root: the runner hands the proxy a copy it can read
    runners: list[PodRunner] = []
    try:
        port = await server.start(net.gateway, 0)  # the host's side of the bridge
        sidecar = SidecarSpec(f"{net.gateway}:{port}", token, extra_args=FAST, ready_timeout=20)
        hosts = {"httpbin": vip, "httpbin.default": vip, "httpbin.default.svc": vip,
                 "httpbin.default.svc.cluster.local": vip}

        def runner(name: str, spec: dict, labels: dict, rec: Recorder, **kw: Any) -> PodRunner:
            r = PodRunner("default", name, spec, labels, kw.pop("annotations", {}), "default", net,
                          kw.pop("sidecar", sidecar), ROOT,
                          tmp / "logs" / name, rec, hosts=hosts, **kw)
            runners.append(r)
            return r

        hb_labels, cl_labels = {"app": "httpbin", "version": "v1"}, {"app": "client"}
        hb_rec, cl_rec, pl_rec = (Recorder(world.report(hb_labels)), Recorder(world.report(cl_labels)),
                                  Recorder(world.report({"app": "plain"})))
        hb = runner(f"httpbin-{tag}", HTTPBIN_SPEC, hb_labels, hb_rec, annotations={"example.com/team": "a"})
        cl = runner(f"client-{tag}", SLEEP_SPEC, cl_labels, cl_rec)
        pl = runner(f"plain-{tag}", SLEEP_SPEC, {"app": "plain"}, pl_rec, sidecar=None)
        await asyncio.gather(hb.start(), cl.start(), pl.start())

        # the sidecar was ready before the app container started (holdApplicationUntilProxyStarts)
        first_ready = next(t for t, s in hb_rec.history if any(c.sidecar and c.ready for c in s.containers))
        app_started = next(t for t, s in hb_rec.history if any(c.name == "httpbin" and c.started_at for c in s.containers))
        assert first_ready <= app_started
        hb_pid = hb.supervisor("httpbin").container.pid
        sc_pid = hb.supervisor("istio-proxy").container.pid
        assert Path(f"/proc/{sc_pid}/status").read_text().count("1337") >= 2  # the proxy runs as uid 1337
        env = await environ(hb_pid)
        assert env["POD_IP"] == hb.ip and env["POD_NAME"] == hb.name and env["HOSTNAME"] == hb.name

        # readiness through the sidecar's inbound side (the probe goes to the pod IP, as the kubelet's)
        await until(lambda: hb_rec.last.ready, "the httpbin pod to be ready")
        assert hb_rec.last.ready_count == "2/2" and hb_rec.last.phase == "Running"
        assert [c.name for c in hb_rec.last.containers] == ["istio-proxy", "httpbin"]
        # the node the sidecar announced: the pod's identity, address, labels, annotations, ports
        node = next(p.node for p in server.statuses() if p.node.name == hb.name)
        assert (node.role, node.namespace, node.ips, node.interception) == ("sidecar", "default", [hb.ip], "REDIRECT")
        assert node.labels == hb_labels and node.annotations == {"example.com/team": "a"}
        assert node.workload_ports == [8000]

        # client (sidecar): by name -> ClusterIP -> REDIRECT 15001 -> its sidecar -> the httpbin pod
        in_client = net.exec_argv(cl.key, [])
        r: dict = {}

        async def call_ok() -> bool:
            nonlocal r
            r = await fetch(in_client, "http://httpbin:8000/headers")
            return r["status"] == 200

        end = time.monotonic() + 15
        while not await call_ok():
            assert time.monotonic() < end, r
            await asyncio.sleep(0.2)
        assert r["headers"].get("server") == "istio-envoy"
        assert r["headers"].get("x-upstream") == hb.name
        assert "x-request-id" in json.loads(r["body"])["headers"]

        # plain pod (no sidecar): the ClusterIP is DNATed to the endpoint, whose sidecar takes it inbound
        await pl.update_network(services=[(vip, 8000, [(hb.ip, 8000)])])
        r = await fetch(net.exec_argv(pl.key, []), f"http://{vip}:8000/headers")
        assert r["status"] == 200 and r["headers"].get("x-upstream") == hb.name
        await until(lambda: "inbound|8000||" in (hb.log_path("istio-proxy")).read_text(),
                    "the httpbin sidecar's inbound access log")
        await until(lambda: "outbound|8000||httpbin.default.svc.cluster.local" in cl.log_path("istio-proxy").read_text(),
                    "the client sidecar's outbound access log")

        # stop: the app first, then the sidecar drains (quitquitquit), then the namespace goes
        netns = hb.net.netns
        n0 = len(hb_rec.history)
        final = await hb.stop()
        assert final.deleted and not Path(f"/run/netns/{netns}").exists()
        after = [s for _, s in hb_rec.history[n0:]]
        assert after[0].reason == "Terminating" and not after[0].ready

        def when(pred: Callable[[PodStatus], bool]) -> int:
            return next(i for i, s in enumerate(after) if pred(s))
        app_down = when(lambda s: next(c for c in s.containers if c.name == "httpbin").state != "Running")
        proxy_down = when(lambda s: next(c for c in s.containers if c.sidecar).state != "Running")
        assert app_down < proxy_down
        assert hb.sidecar_drained
    finally:
        for rn in runners:
            await rn.stop(grace=2)
        await server.close()
        net.teardown()
    assert not [ln for ln in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
                if ln.startswith(net.prefix + "-")]


# --------------------------------------------------------------------------- supervision


def test_crash_loop_backoff_and_liveness(tmp_path):
    asyncio.run(asyncio.wait_for(_crash(tmp_path), 40))


async def _crash(tmp: Path) -> None:
    net = unique_network(tmp / "state")
    rec = Recorder()
    spec = {
        "containers": [
            {"name": "crash", "command": [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]},
            {"name": "hangs", "command": [sys.executable, "-c", "import time; time.sleep(3600)"],
             "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 0.1, "failureThreshold": 2}},
        ],
        "terminationGracePeriodSeconds": 1,
    }
    pod = PodRunner("default", f"crash-{uuid.uuid4().hex[:4]}", spec, {"app": "crash"}, {}, None, net, None,
                    ROOT, tmp / "logs", rec, backoff_base=0.2)
    try:
        await pod.start()
        await until(lambda: rec.container("crash").restarts >= 3, "three restarts", 20)
        states = [next(c for c in s.containers if c.name == "crash").state for _, s in rec.history]
        assert "CrashLoopBackOff" in states and "Error" in states
        assert any(s.reason == "CrashLoopBackOff" for _, s in rec.history)
        cs = rec.container("crash")
        assert cs.exit_code == 3 and not cs.ready
        assert rec.last.phase == "Running"  # a crash-looping pod is still Running, as in Kubernetes
        # starts: the first restart at once, then 0.2 s, then 0.4 s
        starts = sorted({next(c for c in s.containers if c.name == "crash").started_at for _, s in rec.history} - {None})
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert gaps[0] < 0.2 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps
        assert pod.log_path("crash").read_text().count("boom\n") >= 3  # output as-is, appended
        # a failing liveness probe kills and restarts the container
        await until(lambda: rec.container("hangs").restarts >= 1, "a liveness restart", 10)
        assert any("Liveness probe failed" in c.message for _, s in rec.history for c in s.containers)
    finally:
        await pod.stop()
        net.teardown()


def test_restart_policy_never_and_config_errors(tmp_path):
    async def go() -> None:
        rec = Recorder()
        spec = {"restartPolicy": "Never", "containers": [
            {"name": "job", "command": [sys.executable, "-c", "import sys; print(*sys.argv[1:])"],
             "args": ["$(GREETING)", "$$(NOT)", "$(UNSET)"],
             "env": [{"name": "GREETING", "value": "hello"}]}]}
        pod = PodRunner("default", "job", spec, {}, {}, None, None, None, tmp_path, tmp_path / "logs", rec)
        try:
            await pod.start()
            await until(lambda: rec.last.phase == "Succeeded", "the job to succeed", 10)
            assert rec.last.reason == "Completed" and rec.container("job").restarts == 0
            # $(VAR) expanded, $$ escapes, unknown references kept
            assert pod.log_path("job").read_text() == "hello $(NOT) $(UNSET)\n"
        finally:
            await pod.stop()
        bad = {"containers": [{"name": "x", "command": ["true"],
                               "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}
        rec2 = Recorder()
        pod2 = PodRunner("default", "bad", bad, {}, {}, None, None, None, tmp_path, tmp_path / "logs2", rec2)
        try:
            await pod2.start()
            assert rec2.last.phase == "Pending" and rec2.last.reason == "CreateContainerConfigError"
            assert "secretKeyRef" in rec2.container("x").message
        finally:
            await pod2.stop()

    asyncio.run(asyncio.wait_for(go(), 20))


# --------------------------------------------------------------------------- explicit mode


def explicit_config(node: model.Node) -> model.ProxyConfig:
    """What a NONE-mode sidecar should get: an explicit HTTP proxy on <pod ip>:15001 and the
    inbound listener <pod ip>:8000 -> the app's 127.0.0.1 port."""
    ip, app = node.ips[0], node.app_ports[8000]
    route = {"match": {"uri": {"prefix": "/"}}, "route": {"clusters": [{"cluster": "inbound|8000||"}]}}
    return model.decode_config({
        "version": "1", "node": msgspec.to_builtins(node),
        "listeners": [
            {"name": f"{ip}_15001", "address": ip, "port": 15001,
             "default_filter_chain": {"http": {"route_config": "http_proxy"}}},
            {"name": f"{ip}_8000", "address": ip, "port": 8000,
             "default_filter_chain": {"http": {"route_config": "inbound|8000||"}}},
        ],
        "routes": [{"name": n, "virtual_hosts": [{"name": n, "domains": ["*"], "routes": [route]}]}
                   for n in ("http_proxy", "inbound|8000||")],
        "clusters": [{"name": "inbound|8000||", "type": "STATIC"}],
        "endpoints": [{"cluster": "inbound|8000||", "endpoints": [{"address": "127.0.0.1", "port": app}]}],
    })


def test_explicit_mode(tmp_path):
    async def go() -> None:
        server = DiscoveryServer(explicit_config, TOKEN, debounce=0.02)
        port = await server.start("127.0.0.1", 0)
        token = tmp_path / "token"
        token.write_text(TOKEN)
        rec = Recorder()
        spec = {**HTTPBIN_SPEC, "containers": [{**HTTPBIN_SPEC["containers"][0], "args": ["--name", "explicit"]}]}
        pod = PodRunner("default", "explicit", spec, {"app": "httpbin"}, {}, "default", None,
                        SidecarSpec(f"127.0.0.1:{port}", token, extra_args=FAST), ROOT, tmp_path / "logs", rec)
        try:
            await pod.start()
            ip = pod.ip
            assert ip.startswith("127.0.1.") and rec.last.ip == ip
            env = await environ(pod.supervisor("httpbin").container.pid)
            app_port = int(env["PORT"])
            assert pod.app_ports == {8000: app_port}
            assert env["HTTP_PROXY"] == env["http_proxy"] == f"http://{ip}:15001"
            # the readiness probe of port 8000 goes straight to the app's port (probe rewrite)
            await until(lambda: rec.last.ready, "the explicit pod to be ready")
            # inbound: <pod ip>:8000 (the sidecar) -> 127.0.0.1:PORT (the app)
            r = await fetch([], f"http://{ip}:8000/headers")
            assert r["status"] == 200 and r["headers"]["x-upstream"] == "explicit"
            # outbound: through the HTTP proxy the app is given
            r = await fetch([], "http://httpbin.default:8000/anything", env={"PATH": env["PATH"], "http_proxy": env["http_proxy"]})
            assert r["status"] == 200 and r["headers"]["server"] == "istio-envoy"
            # a second explicit pod gets another address
            lease = LoopbackAllocator().acquire()  # the shared default: held addresses are skipped
            assert lease.ip != ip
            lease.release()
        finally:
            await pod.stop(grace=2)
            await server.close()
        assert pod.sidecar_drained

    asyncio.run(asyncio.wait_for(go(), 30))


# --------------------------------------------------------------------------- a sidecar that never gets ready


def test_sidecar_never_ready(tmp_path):
    """No control plane: the app never starts; start() fails after ready_timeout, or as soon
    as stop() is called; either way stop() removes everything."""

    async def go() -> None:
        net = unique_network(tmp_path / "state")
        token = tmp_path / "token"
        token.write_text(TOKEN)
        nowhere = f"{net.gateway}:9"  # nothing listens there
        try:
            rec = Recorder()
            pod = PodRunner("default", "lonely", SLEEP_SPEC, {"app": "lonely"}, {}, None, net,
                            SidecarSpec(nowhere, token, extra_args=FAST, ready_timeout=1.0), ROOT,
                            tmp_path / "logs", rec)
            with pytest.raises(PodError, match="not ready"):
                await pod.start()
            assert rec.last.phase == "Failed" and rec.last.reason == "SidecarNotReady"
            assert rec.container("app").state == "ContainerCreating"  # held until the proxy is ready
            netns = pod.net.netns
            await pod.stop(grace=1)
            assert not Path(f"/run/netns/{netns}").exists()

            rec2 = Recorder()
            pod2 = PodRunner("default", "stopped", SLEEP_SPEC, {"app": "x"}, {}, None, net,
                             SidecarSpec(nowhere, token, extra_args=FAST, ready_timeout=30), ROOT,
                             tmp_path / "logs2", rec2)
            starting = asyncio.ensure_future(pod2.start())
            await until(lambda: pod2.net is not None, "the pod's network")
            t0 = time.monotonic()
            final = await pod2.stop(grace=1)
            with pytest.raises(PodError, match="stopped"):
                await starting
            assert time.monotonic() - t0 < 5 and final.deleted
            assert not net.pods()
        finally:
            net.teardown()

    asyncio.run(asyncio.wait_for(go(), 20))
