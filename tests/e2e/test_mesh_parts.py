"""The runtime's parts without processes or root: ClusterIP allocation, injection decisions,
the controller's rollouts (with fake pods), placement of the gateway's listeners, and the
kubectl-like tables. The real thing runs in test_bookinfo_mesh.py."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pilotfish.api.loader import load_text
from pilotfish.cli import get_cmd, pods_cmd
from pilotfish.proxy import model
from pilotfish.runtime.controller import Controller, pod_status_doc, template_hash, wants_sidecar
from pilotfish.runtime.ipam import ClusterIPAllocator, MeshStore
from pilotfish.runtime.mesh import Placement
from pilotfish.runtime.pod import ContainerStatus, PodStatus

SVC = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080}}]
"""


def deployment(name: str, replicas: int = 1, env: str = "a", ns_label: str | None = None,
               annotations: str = "") -> str:
    ns = f"""apiVersion: v1
kind: Namespace
metadata: {{name: default, labels: {{istio-injection: {ns_label}}}}}
---
""" if ns_label else ""
    return ns + f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}, version: v1}}
      annotations: {{{annotations}}}
    spec:
      containers:
      - name: app
        image: example/app
        command: [sleep, "1000"]
        env: [{{name: X, value: "{env}"}}]
"""


# --------------------------------------------------------------------------- ClusterIPs


def test_cluster_ips_are_allocated_kept_and_unique():
    store = MeshStore(service_cidr="10.96.0.0/24")
    docs = "---\n".join(SVC.format(name=f"s{i}") for i in range(100))
    store.apply(load_text(docs, "svc.yaml"))
    ips = {so.name: so.data["spec"]["clusterIP"] for so in store.list("Service")}
    assert len(set(ips.values())) == 100
    assert all(ip.startswith("10.96.0.") and ip not in ("10.96.0.0", "10.96.0.1", "10.96.0.255")
               for ip in ips.values())
    assert all(so.data["spec"]["clusterIPs"] == [so.data["spec"]["clusterIP"]] for so in store.list("Service"))
    # applying the same file again changes nothing and keeps every address
    results = store.apply(load_text(docs, "svc.yaml"))
    assert {r.action for r in results} == {"unchanged"}
    assert {so.name: so.data["spec"]["clusterIP"] for so in store.list("Service")} == ips
    # a service deleted and created again gets its address back (it is a hash of its name)
    store.delete("Service", "default", "s7")
    store.apply(load_text(SVC.format(name="s7"), "svc.yaml"))
    assert store.get("Service", "default", "s7").data["spec"]["clusterIP"] == ips["s7"]


def test_cluster_ip_given_headless_and_external_name():
    store = MeshStore()
    store.apply(load_text("""\
apiVersion: v1
kind: Service
metadata: {name: fixed}
spec: {clusterIP: 10.96.7.7, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com}
""", "x.yaml"))
    spec = {so.name: so.data["spec"] for so in store.list("Service")}
    assert spec["fixed"]["clusterIP"] == "10.96.7.7"
    assert spec["headless"]["clusterIP"] == "None"
    assert "clusterIP" not in spec["ext"]


def test_allocator_probes_past_used_addresses():
    a = ClusterIPAllocator("10.0.0.0/29")  # 5 usable addresses
    used: set[str] = set()
    for i in range(5):
        used.add(a.allocate("ns", f"s{i}", used))
    assert len(used) == 5
    with pytest.raises(RuntimeError, match="full"):
        a.allocate("ns", "one-more", used)


def test_status_survives_apply_and_runtime_writes_do_not_undo_the_user():
    store = MeshStore()
    store.apply(load_text(deployment("web"), "d.yaml"))
    store.write_runtime([], [("Deployment", "default", "web", {"readyReplicas": 1})], [])
    assert store.get("Deployment", "default", "web").data["status"] == {"readyReplicas": 1}
    # the user applies the same document (without status): nothing changes
    assert [r.action for r in store.apply(load_text(deployment("web"), "d.yaml"))] == ["unchanged"]
    # the user changes the spec: the status stays, the spec is the user's
    store.apply(load_text(deployment("web", replicas=3), "d.yaml"))
    store.write_runtime([], [("Deployment", "default", "web", {"readyReplicas": 2})], [])
    so = store.get("Deployment", "default", "web")
    assert so.data["spec"]["replicas"] == 3 and so.data["status"] == {"readyReplicas": 2}
    assert so.file == "d.yaml"


# --------------------------------------------------------------------------- injection


@pytest.mark.parametrize("ns,labels,annotations,want", [
    ({"istio-injection": "enabled"}, {}, {}, True),
    ({}, {}, {}, False),
    ({"istio-injection": "disabled"}, {}, {}, False),
    ({"istio-injection": "enabled"}, {}, {"sidecar.istio.io/inject": "false"}, False),
    ({}, {}, {"sidecar.istio.io/inject": "true"}, True),
    ({}, {"sidecar.istio.io/inject": "true"}, {"sidecar.istio.io/inject": "false"}, True),
    ({"istio-injection": "enabled"}, {}, {"sidecar.istio.io/inject": "False"}, False),
])
def test_injection_decision(ns, labels, annotations, want):
    assert wants_sidecar(ns, labels, annotations) is want


def test_template_hash_is_stable_and_kubernetes_shaped():
    t = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}
    h = template_hash(t)
    assert h == template_hash({"spec": {"containers": [{"name": "c"}]}, "metadata": {"labels": {"app": "a"}}})
    assert len(h) == 10 and set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert template_hash({**t, "spec": {"containers": [{"name": "d"}]}}) != h


# --------------------------------------------------------------------------- the controller, with fake pods


class FakeRunner:
    """Stands in for PodRunner: ready when the test says so."""

    instances: list[FakeRunner] = []

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.name = kw["name"]
        self.on_status = kw["on_status"]
        self.ready = False
        self.stopped = False
        self.hosts = kw["hosts"]
        self.services = kw["services"]
        FakeRunner.instances.append(self)

    def status(self, deleted: bool = False) -> PodStatus:
        cs = [ContainerStatus("app", "Running", self.ready, 0, started_at=time.time())]
        if self.kw["inject"]:
            cs.append(ContainerStatus("istio-proxy", "Running", True, 0, sidecar=True))
        return PodStatus("default", self.name, "Running" if not deleted else "Succeeded",
                         self.ready and not deleted, "10.0.0.9", tuple(cs), time.time(),
                         "Running", deleted=deleted)

    async def start(self) -> None:
        self.on_status(self.status())

    def set_ready(self, ok: bool = True) -> None:
        self.ready = ok
        self.on_status(self.status())

    async def stop(self, grace: float | None = None) -> PodStatus:
        self.stopped = True
        st = self.status(deleted=True)
        self.on_status(st)
        return st

    async def update_network(self, hosts=None, services=None) -> None:
        self.hosts = hosts if hosts is not None else self.hosts
        self.services = services if services is not None else self.services

    def log_path(self, container: str) -> Path:
        return Path("/nonexistent") / f"{container}.log"

    def supervisor(self, container: str) -> Any:
        return None


async def _settle(controller: Controller, rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0.03)
    await controller.flush()


def _live(c: Controller, owner: str) -> list:
    return [h for h in c.pods.values() if h.owner == owner and not h.stopping]


def test_controller_runs_rolls_scales_and_deletes(tmp_path):
    async def go() -> None:
        FakeRunner.instances = []
        store = MeshStore()
        # fake pods serve no traffic: no endpoint drain before stopping one
        c = Controller(store, FakeRunner, log_root=tmp_path, node_name="node1", host_ip="10.0.0.1",
                       endpoint_drain=0)
        await c.start()
        store.apply(load_text(deployment("web", replicas=2, ns_label="enabled"), "d.yaml"))
        await _settle(c)
        pods = _live(c, "web")
        assert len(pods) == 2 and all(h.inject for h in pods)
        assert all(h.name.startswith("web-" + h.template_hash + "-") for h in pods)
        stored = store.list("Pod")
        assert len(stored) == 2
        spec_names = [x["name"] for x in stored[0].data["spec"]["containers"]]
        assert spec_names == ["app", "istio-proxy"]
        assert stored[0].data["metadata"]["labels"]["pod-template-hash"] == pods[0].template_hash
        assert stored[0].data["status"]["containerStatuses"][0]["ready"] is False
        for r in FakeRunner.instances:
            r.set_ready()
        await _settle(c)
        dep = store.get("Deployment", "default", "web").data["status"]
        assert dep["readyReplicas"] == 2 and dep["updatedReplicas"] == 2
        assert {so.data["status"]["conditions"][-1]["status"] for so in store.list("Pod")} == {"True"}
        # a changed template: one new pod, then an old one stops only when a new one is ready
        old = {h.name for h in _live(c, "web")}
        store.apply(load_text(deployment("web", replicas=2, env="b"), "d.yaml"))
        await _settle(c)
        new = [h for h in _live(c, "web") if h.name not in old]
        assert len(new) == 2 and len([h for h in _live(c, "web") if h.name in old]) == 2
        new_runners = [r for r in FakeRunner.instances if r.name in {h.name for h in new}]
        new_runners[0].set_ready()
        await _settle(c)
        assert len([h for h in _live(c, "web") if h.name in old]) == 1
        new_runners[1].set_ready()
        await _settle(c)
        assert {h.name for h in _live(c, "web")} == {h.name for h in new}
        assert {so.name for so in store.list("Pod")} == {h.name for h in new}
        # scale down: an unready pod goes first
        new_runners[0].set_ready(False)
        store.apply(load_text(deployment("web", replicas=1, env="b"), "d.yaml"))
        await _settle(c)
        assert [h.name for h in _live(c, "web")] == [new_runners[1].name]
        # injection overridden by the pod annotation
        store.apply(load_text(deployment("plain", annotations='"sidecar.istio.io/inject": "false"'), "p.yaml"))
        await _settle(c)
        (plain,) = _live(c, "plain")
        assert not plain.inject and plain.runner.services is not None
        # deleting the Deployment stops its pods and removes their objects
        store.delete("Deployment", "default", "web")
        await _settle(c)
        assert _live(c, "web") == [] and [so.name for so in store.list("Pod")] == [plain.name]
        await c.stop()
        assert store.list("Pod") == []

    asyncio.run(go())


def test_controller_writes_hosts_and_service_rules(tmp_path):
    from pilotfish.controlplane.view import ConfigView
    from pilotfish.registry import Registry

    async def go() -> None:
        FakeRunner.instances = []
        store = MeshStore(service_cidr="10.96.0.0/16")
        c = Controller(store, FakeRunner, log_root=tmp_path, node_name="n", host_ip="10.0.0.1",
                       endpoint_drain=0)
        await c.start()
        store.apply(load_text(SVC.format(name="web") + "---\n" + deployment("web"), "d.yaml"))
        await _settle(c)
        FakeRunner.instances[0].set_ready()
        await _settle(c)
        c.registry_changed(Registry.build(ConfigView.build(store.list())))
        await _settle(c)
        ip = store.get("Service", "default", "web").data["spec"]["clusterIP"]
        r = FakeRunner.instances[0]
        assert r.hosts == {ip: "web.default.svc.cluster.local web.default.svc web.default web"}
        assert r.services == [(ip, 9080, [("10.0.0.9", 9080)])]
        await c.stop()

    asyncio.run(go())


# --------------------------------------------------------------------------- placement


def _cfg(*listeners: tuple[str, str, int]) -> model.ProxyConfig:
    cfg = model.ProxyConfig()
    cfg.listeners = [model.Listener(name=n, address=a, port=p, default_filter_chain=model.FilterChain(
        name="c", tcp=model.TcpProxy(cluster="BlackHoleCluster"))) for n, a, p in listeners]
    return cfg


def test_placement_moves_the_gateway_and_explicit_sidecars_only():
    pl = Placement("127.0.0.1", {80: 8080})
    gw = model.Node(role="gateway", name="istio-ingressgateway-abc-12345", namespace="istio-system",
                    labels={"istio": "ingressgateway"})
    cfg = _cfg(("0.0.0.0_80", "0.0.0.0", 80), ("0.0.0.0_9443", "0.0.0.0", 9443))
    out = pl.adjust(gw, cfg)
    assert [(x.name, x.address, x.port) for x in out.listeners] == [
        ("127.0.0.1_8080", "127.0.0.1", 8080), ("127.0.0.1_9443", "127.0.0.1", 9443)]
    assert cfg.listeners[0].address == "0.0.0.0"  # the control plane's object is untouched
    assert pl.adjust(gw, cfg).listeners[0] is out.listeners[0]  # same input, same object
    other_gw = msgspec.structs.replace(gw, name="my-gateway")
    assert pl.adjust(other_gw, cfg) is cfg
    sc = model.Node(role="sidecar", name="p", interception="NONE", ips=["127.0.1.5"])
    out = pl.adjust(sc, _cfg(("127.0.0.1_15001", "127.0.0.1", 15001), ("127.0.1.5_9080", "127.0.1.5", 9080)))
    assert [(x.name, x.address, x.port) for x in out.listeners] == [
        ("127.0.1.5_15001", "127.0.1.5", 15001), ("127.0.1.5_9080", "127.0.1.5", 9080)]
    redirect = model.Node(role="sidecar", name="p", ips=["10.244.0.2"])
    cfg = _cfg(("virtualOutbound", "0.0.0.0", 15001))
    assert pl.adjust(redirect, cfg) is cfg


# --------------------------------------------------------------------------- tables and logs


def _pod(ready: list[bool], states: list[str], restarts: int = 0) -> dict:
    cs = tuple(ContainerStatus(f"c{i}", s, r, restarts if i == 0 else 0, exit_code=1 if s != "Running" else None)
               for i, (r, s) in enumerate(zip(ready, states, strict=True)))
    st = PodStatus("default", "p", "Running", all(ready), "10.0.0.2", cs, time.time(), states[0])
    return {"metadata": {"name": "web-abc", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": c.name} for c in cs], "nodeName": "n1"},
            "status": pod_status_doc(st, "10.0.0.1", [c.name for c in cs])}


def test_pod_and_deployment_tables():
    now = get_cmd.dt.datetime(2020, 1, 1, 0, 5, tzinfo=get_cmd.dt.UTC)
    text = get_cmd.render_table([_pod([True, True], ["Running", "Running"])], "Pod", all_namespaces=False,
                                wide=False, now=now)
    assert text.split("\n")[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    assert text.split("\n")[1].split() == ["web-abc", "2/2", "Running", "0", "5m", "10.0.0.2"]
    text = get_cmd.render_table([_pod([False, True], ["CrashLoopBackOff", "Running"], 3)], "Pod",
                                all_namespaces=True, wide=True, now=now)
    head, row = text.split("\n")[:2]
    assert head.split()[:8] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert row.split()[:5] == ["default", "web-abc", "1/2", "CrashLoopBackOff", "3"]
    dep = {"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
           "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    text = get_cmd.render_table([dep], "Deployment", all_namespaces=False, wide=False, now=now)
    assert [ln.split() for ln in text.splitlines()] == [
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["web", "2/3", "3", "2", "5m"]]


def test_logs_finds_pods_and_containers(tmp_path):
    logs = tmp_path / "logs" / "default"
    (logs / "web-bcdfghjklm-x2x4x").mkdir(parents=True)
    (logs / "web-bcdfghjklm-x2x4x" / "app.log").write_text("one\ntwo\nthree\n")
    (logs / "web-bcdfghjklm-x2x4x" / "istio-proxy.log").write_text("[access] GET /\n")
    (logs / "db-bcdfghjklm-aaaaa").mkdir()

    def logs_cli(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = pods_cmd.argparse.ArgumentParser()
        pods_cmd.add_arguments(args)
        code = pods_cmd.run(args.parse_args([*argv, "--state-dir", str(tmp_path)]), out, err)
        return code, out.getvalue(), err.getvalue()

    assert logs_cli("web-bcdfghjklm-x2x4x") == (0, "one\ntwo\nthree\n", "")
    assert logs_cli("web", "--tail", "1")[1] == "three\n"
    assert logs_cli("deploy/web", "-c", "istio-proxy")[1] == "[access] GET /\n"
    code, _, err = logs_cli("web", "-c", "nope")
    assert code == 1 and "choose one of: [app istio-proxy]" in err
    code, _, err = logs_cli("nothing")
    assert code == 1 and "NotFound" in err
    code, _, err = logs_cli("db")
    assert code == 1 and "no output yet" in err
