"""Registry.build: services, protocols, workloads and endpoints from a ConfigView."""

from __future__ import annotations

import textwrap

import pytest

from pilotfish.api.loader import load_text
from pilotfish.controlplane.view import ConfigView
from pilotfish.registry import AUTO, Registry, service_port_protocol


def registry(text: str) -> Registry:
    return Registry.build(ConfigView.build(load_text(textwrap.dedent(text), "mesh.yaml")))


def eps(reg: Registry, host: str, port: int, ns: str | None = None):
    svc = reg.service(host, ns)
    assert svc is not None, host
    return [(e.address, e.port, e.health) for e in reg.endpoints(svc, port)]


# --------------------------------------------------------------------------- protocols

@pytest.mark.parametrize(
    "port,name,transport,app,expected",
    [
        (80, "http", "TCP", "", "HTTP"),
        (80, "http-web", "TCP", "", "HTTP"),
        (80, "HTTP2-x", "TCP", "", "HTTP2"),
        (80, "grpc", "TCP", "", "GRPC"),
        (80, "grpc-web", "TCP", "", "GRPC-Web"),
        (80, "grpc-web-x", "TCP", "", "GRPC-Web"),
        (443, "https", "TCP", "", "HTTPS"),
        (443, "tls-foo", "TCP", "", "TLS"),
        (5432, "tcp-db", "TCP", "", "TCP"),
        (27017, "mongo", "TCP", "", "Mongo"),
        (3306, "mysql", "TCP", "", "MySQL"),
        (6379, "redis", "TCP", "", "Redis"),
        (80, "web", "TCP", "", AUTO),  # unknown prefix: detected (treated as HTTP)
        (80, "", "TCP", "", AUTO),  # unnamed
        (3306, "", "TCP", "", "TCP"),  # well-known server-first port
        (80, "tcp", "TCP", "http", "HTTP"),  # appProtocol first
        (80, "http", "TCP", "kubernetes.io/h2c", "HTTP2"),
        (80, "", "TCP", "kubernetes.io/ws", "HTTP"),
        (443, "", "TCP", "kubernetes.io/wss", "HTTPS"),
        (53, "dns", "UDP", "", "UDP"),
    ],
)
def test_protocol_selection(port, name, transport, app, expected):
    assert service_port_protocol(port, name, transport, app) == expected


# --------------------------------------------------------------------------- services

MESH = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, annotations: {networking.istio.io/exportTo: "shop,ops"}}
spec:
  clusterIP: 10.0.0.7
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: web}
  - {name: tcp-admin, port: 9000}
---
apiVersion: v1
kind: Service
metadata: {name: nosel, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  type: ExternalName
  externalName: db.example.com
  ports: [{name: tcp, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  namespace: shop
  labels: {app: reviews, version: v1, topology.kubernetes.io/region: eu, topology.kubernetes.io/zone: eu-1}
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: app, ports: [{name: web, containerPort: 8080}]}]
status: {phase: Running, podIP: 10.1.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: shop, labels: {app: reviews, version: v2}}
spec:
  containers: [{name: app, ports: [{name: web, containerPort: 8081}]}]
status: {phase: Running, podIP: 10.1.0.2, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-noport, namespace: shop, labels: {app: reviews}}
spec:
  containers: [{name: app}]
status: {phase: Running, podIP: 10.1.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-pending, namespace: shop, labels: {app: reviews}}
spec:
  containers: [{name: app}]
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-done, namespace: shop, labels: {app: reviews}}
spec:
  containers: [{name: app}]
status: {phase: Succeeded, podIP: 10.1.0.9}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-other-ns, namespace: elsewhere, labels: {app: reviews}}
spec:
  containers: [{name: app, ports: [{name: web, containerPort: 8080}]}]
status: {phase: Running, podIP: 10.2.0.1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm, namespace: shop}
spec:
  address: 192.168.1.5
  labels: {app: reviews, version: vm}
  ports: {http: 7000}
  weight: 3
  locality: us/east/a
  serviceAccount: vm-sa
"""


def test_kubernetes_service():
    reg = registry(MESH)
    svc = reg.service("reviews.shop.svc.cluster.local")
    assert svc.kind == "Service" and svc.namespace == "shop" and svc.name == "reviews"
    assert svc.cluster_ip == "10.0.0.7" and svc.addresses == ("10.0.0.7",)
    assert [(p.name, p.port, p.protocol, p.target_port) for p in svc.ports] == [
        ("http", 9080, "HTTP", "web"), ("tcp-admin", 9000, "TCP", None)]
    assert svc.selector == {"app": "reviews"}
    assert svc.export_to == frozenset({"shop", "ops"})
    assert svc.visible_to("ops") and not svc.visible_to("default")
    assert svc.origin.startswith("Service shop/reviews mesh.yaml:")
    assert reg.service("nosel.shop.svc.cluster.local").cluster_ip is None


def test_endpoints_named_target_port_readiness_and_workload_entries():
    reg = registry(MESH)
    # named targetPort "web": resolved per pod; a pod without it is left out; pending pods
    # have no address; finished pods are ignored; other namespaces never match; the
    # WorkloadEntry's ports map wins over the target port.
    assert eps(reg, "reviews.shop.svc.cluster.local", 9080) == [
        ("10.1.0.1", 8080, "HEALTHY"), ("10.1.0.2", 8081, "UNHEALTHY"), ("192.168.1.5", 7000, "HEALTHY")]
    # no targetPort: the service port (a pod without named ports still serves it)
    assert eps(reg, "reviews.shop.svc.cluster.local", 9000) == [
        ("10.1.0.1", 9000, "HEALTHY"), ("10.1.0.2", 9000, "UNHEALTHY"), ("10.1.0.3", 9000, "HEALTHY"),
        ("192.168.1.5", 9000, "HEALTHY")]
    svc = reg.service("reviews.shop.svc.cluster.local")
    by_addr = {e.address: e for e in reg.endpoints(svc, 9080)}
    assert by_addr["10.1.0.1"].locality == "eu/eu-1"
    assert by_addr["10.1.0.1"].service_account == "bookinfo-reviews"
    assert by_addr["10.1.0.1"].labels["version"] == "v1"
    vm = by_addr["192.168.1.5"]
    assert (vm.weight, vm.locality, vm.service_account, vm.labels["version"]) == (3, "us/east/a", "vm-sa", "vm")
    assert vm.workload == "WorkloadEntry shop/reviews-vm"
    assert eps(reg, "nosel.shop.svc.cluster.local", 80) == []


def test_external_name_service_is_dns():
    reg = registry(MESH)
    svc = reg.service("ext.shop.svc.cluster.local")
    assert svc.resolution == "DNS"
    assert eps(reg, "ext.shop.svc.cluster.local", 5432) == [("db.example.com", 5432, "HEALTHY")]


def test_workloads_and_lookup():
    reg = registry(MESH)
    names = {(w.kind, w.name) for w in reg.workloads}
    assert ("Pod", "reviews-done") not in names and ("Pod", "reviews-pending") in names
    w = reg.workload("shop", "reviews-v1")
    assert w.ports == {"web": 8080} and w.address == "10.1.0.1"
    assert [x.name for x in reg.workloads_at("10.1.0.2")] == ["reviews-v2"]
    assert [s.name for s in reg.services_selecting("shop", {"app": "reviews", "version": "v9"})] == ["reviews"]
    assert reg.services_selecting("elsewhere", {"app": "reviews"}) == ()


def test_pod_readiness_variants():
    reg = registry("""
        apiVersion: v1
        kind: Service
        metadata: {name: s}
        spec: {selector: {app: s}, ports: [{name: http, port: 80}], publishNotReadyAddresses: false}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: running-no-conditions, labels: {app: s}}
        spec: {containers: [{name: c}]}
        status: {phase: Running, podIP: 10.0.0.1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: deleting, labels: {app: s}, deletionTimestamp: "2026-01-01T00:00:00Z"}
        spec: {containers: [{name: c}]}
        status: {phase: Running, podIP: 10.0.0.2, conditions: [{type: Ready, status: "True"}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: podips-only, labels: {app: s, istio-locality: us-west.zone-b}}
        spec: {containers: [{name: c}]}
        status: {phase: Pending, podIPs: [{ip: 10.0.0.3}]}
    """)
    assert eps(reg, "s.default.svc.cluster.local", 80) == [
        ("10.0.0.1", 80, "HEALTHY"), ("10.0.0.2", 80, "DRAINING"), ("10.0.0.3", 80, "UNHEALTHY")]
    svc = reg.service("s.default.svc.cluster.local")
    assert reg.endpoints(svc, 80)[2].locality == "us-west/zone-b"


def test_service_entries():
    reg = registry("""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: static, namespace: ext}
        spec:
          hosts: [db.internal, db2.internal]
          addresses: [240.0.0.1]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{number: 5432, name: tcp, protocol: TCP}, {number: 80, name: http, protocol: HTTP, targetPort: 8080}]
          endpoints:
          - {address: 10.9.0.1, labels: {version: a}}
          - {address: 10.9.0.2, ports: {http: 9999}, weight: 5, locality: r/z}
          exportTo: ["."]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: dns}
        spec:
          hosts: [api.example.com]
          resolution: DNS
          ports: [{number: 443, name: https, protocol: HTTPS}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: dns-eps}
        spec:
          hosts: [mirror.example.com]
          resolution: DNS
          ports: [{number: 80, name: http, protocol: HTTP}]
          endpoints: [{address: a.example.net}, {address: b.example.net}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: passthrough}
        spec:
          hosts: ["*.wild.com"]
          resolution: NONE
          ports: [{number: 80, name: http, protocol: HTTP}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: selected, namespace: vms}
        spec:
          hosts: [app.vms.internal]
          location: MESH_INTERNAL
          resolution: STATIC
          workloadSelector: {labels: {app: legacy}}
          ports: [{number: 8080, name: http, protocol: HTTP}]
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: vm1, namespace: vms}
        spec: {address: 172.16.0.1, labels: {app: legacy}, ports: {http: 18080}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: legacy-pod, namespace: vms, labels: {app: legacy}}
        spec: {containers: [{name: c}]}
        status: {phase: Running, podIP: 10.5.0.1}
    """)
    db = reg.service("db.internal")
    assert db.kind == "ServiceEntry" and db.resolution == "EDS" and db.location == "MESH_INTERNAL"
    assert db.addresses == ("240.0.0.1",) and db.export_to == frozenset({"ext"})
    assert reg.service("db2.internal") is not None  # one service per host
    assert eps(reg, "db.internal", 5432) == [("10.9.0.1", 5432, "HEALTHY"), ("10.9.0.2", 5432, "HEALTHY")]
    assert eps(reg, "db.internal", 80) == [("10.9.0.1", 8080, "HEALTHY"), ("10.9.0.2", 9999, "HEALTHY")]
    assert reg.endpoints(db, 80)[1].weight == 5 and reg.endpoints(db, 80)[1].locality == "r/z"
    # DNS without endpoints: the host itself
    api = reg.service("api.example.com")
    assert api.resolution == "DNS" and api.location == "MESH_EXTERNAL" and api.ports[0].protocol == "HTTPS"
    assert eps(reg, "api.example.com", 443) == [("api.example.com", 443, "HEALTHY")]
    assert eps(reg, "mirror.example.com", 80) == [("a.example.net", 80, "HEALTHY"), ("b.example.net", 80, "HEALTHY")]
    # NONE: pass-through, no endpoints
    assert reg.service("*.wild.com").resolution == "NONE"
    assert eps(reg, "*.wild.com", 80) == []
    # workloadSelector: WorkloadEntries (ports map) and pods of the namespace
    assert eps(reg, "app.vms.internal", 8080) == [("10.5.0.1", 8080, "HEALTHY"), ("172.16.0.1", 18080, "HEALTHY")]
    assert [s.hostname for s in reg.services_selecting("vms", {"app": "legacy"})] == ["app.vms.internal"]


def test_build_is_pure_and_sorted():
    a = registry(MESH)
    b = registry(MESH)
    assert [s.hostname for s in a.services] == [s.hostname for s in b.services] == sorted(
        s.hostname for s in a.services)
    assert [(w.kind, w.name) for w in a.workloads] == [(w.kind, w.name) for w in b.workloads]
