"""translate() in a mesh of 1000 services (3 ports, 2 subsets, a VirtualService and a
DestinationRule each): a timing print (never asserted: tests do not assert on wall-clock
speed) and checks that proxies share what they have in common."""

from __future__ import annotations

import time

import msgspec
import pytest

from pilotfish.api.types import k8s, networking
from pilotfish.controlplane.translate import translate
from pilotfish.controlplane.view import ConfigView
from pilotfish.proxy import model
from pilotfish.registry import Registry


def _ip(prefix: int, n: int) -> str:
    return f"10.{prefix + n // 65536}.{(n // 256) % 256}.{n % 256}"


def mesh_objects(n_services: int = 1000, n_namespaces: int = 10) -> list:
    objs: list = []
    for i in range(n_services):
        ns = f"ns{i % n_namespaces}"
        name = f"svc{i}"
        objs.append(msgspec.convert({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "clusterIP": _ip(96, i), "ports": [
                {"name": "http", "port": 8080},
                {"name": "grpc", "port": 9090},
                {"name": "tcp-db", "port": 5432},
            ]},
        }, k8s.Service))
        for v in (1, 2):
            objs.append(msgspec.convert({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-v{v}", "namespace": ns, "labels": {"app": name, "version": f"v{v}"}},
                "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080, "name": "http"}]}]},
                "status": {"phase": "Running", "podIP": _ip(0, 2 * i + v),
                           "conditions": [{"type": "Ready", "status": "True"}]},
            }, k8s.Pod))
        objs.append(msgspec.convert({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": name,
                     "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 100}},
                                       "outlierDetection": {"consecutive5xxErrors": 7}},
                     "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                 {"name": "v2", "labels": {"version": "v2"},
                                  "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]},
        }, networking.DestinationRule))
        objs.append(msgspec.convert({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": [name], "http": [
                {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                 "route": [{"destination": {"host": name, "subset": "v2"}}]},
                {"route": [{"destination": {"host": name, "subset": "v1"}, "weight": 90},
                           {"destination": {"host": name, "subset": "v2"}, "weight": 10}],
                 "timeout": "5s"},
            ]},
        }, networking.VirtualService))
    return objs


def node(i: int, ns: str, mode: str = "REDIRECT") -> model.Node:
    return model.Node(role="sidecar", name=f"svc{i}-v1", namespace=ns, interception=mode,
                      labels={"app": f"svc{i}", "version": "v1"}, ips=[_ip(0, 2 * i + 1)])


@pytest.fixture(scope="module")
def mesh():
    t0 = time.perf_counter()
    view = ConfigView.build(mesh_objects())
    reg = Registry.build(view)
    return view, reg, time.perf_counter() - t0


def test_thousand_services_timing(mesh, capsys):
    view, reg, t_build = mesh
    t0 = time.perf_counter()
    first = translate(view, reg, node(0, "ns0"))
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    translate(view, reg, node(10, "ns0"))
    t_same_ns = time.perf_counter() - t0
    t0 = time.perf_counter()
    translate(view, reg, node(1, "ns1"))
    t_new_ns = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(200):
        translate(view, reg, node(i, f"ns{i % 10}"))
    t_200 = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\n[translate, 1000 services x 3 ports x (1+2 subsets): {len(first.clusters)} clusters, "
            f"{sum(len(r.virtual_hosts) for r in first.routes)} virtual hosts] "
            f"view+registry {t_build * 1000:.0f} ms; first proxy (cold caches) {t_first * 1000:.0f} ms; "
            f"next proxy, same namespace {t_same_ns * 1000:.2f} ms; first proxy of another namespace "
            f"{t_new_ns * 1000:.1f} ms; 200 proxies over 10 namespaces {t_200 * 1000:.0f} ms "
            f"({t_200 / 200 * 1000:.2f} ms/proxy)"
        )
    assert len(first.clusters) == 1000 * 3 * 3 + 3 + 3  # outbound, static, inbound (3 ports)
    assert {r.name for r in first.routes} == {"8080", "9090", "inbound|8080||", "inbound|9090||"}


def test_thousand_services_snapshot_is_valid_and_shared(mesh):
    view, reg, _ = mesh
    a = translate(view, reg, node(0, "ns0"))
    b = translate(view, reg, node(10, "ns0"))
    c = translate(view, reg, node(1, "ns1"))
    msgspec.convert(msgspec.to_builtins(a), model.ProxyConfig)
    # proxies of one namespace share their outbound pieces (same objects), not their lists
    oa = [x for x in a.clusters if x.name.startswith("outbound|")]
    ob = [x for x in b.clusters if x.name.startswith("outbound|")]
    assert all(x is y for x, y in zip(oa, ob, strict=True)) and a.clusters is not b.clusters
    # another namespace shares the clusters, and the virtual hosts of services in neither
    assert all(x is y for x, y in zip(oa, [x for x in c.clusters if x.name.startswith("outbound|")], strict=True))
    vh = {v.name: v for v in a.routes[0].virtual_hosts}
    vh_c = {v.name: v for v in c.routes[0].virtual_hosts}
    assert vh["svc5.ns5.svc.cluster.local:8080"] is vh_c["svc5.ns5.svc.cluster.local:8080"]
    assert "svc0" in vh["svc0.ns0.svc.cluster.local:8080"].domains
    assert "svc0" not in vh_c["svc0.ns0.svc.cluster.local:8080"].domains
    # the inbound side is the proxy's own
    assert [x.name for x in a.listeners] == ["virtualInbound", "virtualOutbound"]
    tcp = [ch for ch in a.listeners[1].filter_chains if ch.tcp is not None]
    assert len(tcp) == 1000 and tcp[0].destination_ips
