"""The service registry: services, workloads and endpoints, built from a ConfigView.

``Registry.build(view)`` is a pure function of the view. It reads:

- **Kubernetes Services**: host ``name.namespace.svc.<suffix>``, ports with their protocol
  (:mod:`pilotfish.registry.protocol`), ``spec.clusterIP`` when set (otherwise none yet: the
  runtime allocates addresses later), the selector, the ``networking.istio.io/exportTo``
  annotation. ``type: ExternalName`` becomes a DNS service whose endpoint is the external
  name. A Service without selector has no endpoints (Endpoints objects are not read).
- **Pods**: address (``status.podIP``), labels, named container ports, service account,
  readiness (``Ready`` condition, else ``phase: Running``), locality (``istio-locality``
  label, else ``topology.kubernetes.io/region``/``zone`` and ``topology.istio.io/subzone``).
  Pods that ``Succeeded`` or ``Failed`` are ignored; a pod being deleted is ``DRAINING``.
- **WorkloadEntries**: address, labels, ``ports`` (service port name -> number, overriding
  the target port), weight, locality, service account; ``status.conditions`` ``Healthy:
  False`` makes it UNHEALTHY.
- **ServiceEntries**: one service per host. ``resolution: STATIC`` takes its ``endpoints``
  (or the WorkloadEntries and Pods its ``workloadSelector`` selects in its namespace);
  ``DNS`` (and ``DNS_ROUND_ROBIN``, ``DYNAMIC_DNS``) takes its endpoints' host names, or the
  host itself when it lists none; ``NONE`` has no endpoints (pass-through).

Endpoints of a service port are resolved once: Kubernetes ``targetPort`` as a number, or as
the name of a container port of each pod (pods without that port are left out); a
WorkloadEntry's ``ports[<service port name>]`` wins over the target port.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pilotfish.memo import Memoized
from pilotfish.registry.model import Endpoint, Service, ServicePort, Workload
from pilotfish.registry.protocol import service_entry_port_protocol, service_port_protocol

if TYPE_CHECKING:
    from pilotfish.controlplane.view import ConfigView, Entry

__all__ = ["Registry"]


LOCALITY_LABEL = "istio-locality"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    for k, v in selector.items():
        if labels.get(k) != v:
            return False
    return True


def _locality_from_labels(labels: Mapping[str, str]) -> str | None:
    loc = labels.get(LOCALITY_LABEL)
    if loc:
        return "/".join(loc.split("."))
    region = labels.get(REGION_LABEL, "")
    zone = labels.get(ZONE_LABEL, "")
    sub = labels.get(SUBZONE_LABEL, "")
    if not (region or zone or sub):
        return None
    parts = [region, zone, sub] if sub else ([region, zone] if zone else [region])
    return "/".join(parts)


def _conditions(status: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(status, dict):
        for c in status.get("conditions") or []:
            if isinstance(c, dict) and c.get("type"):
                out[str(c["type"])] = str(c.get("status", ""))
    return out


# --------------------------------------------------------------------------- workloads


def _pod_workload(e: Entry) -> Workload | None:
    pod = e.obj
    status = pod.status if isinstance(pod.status, dict) else {}
    phase = str(status.get("phase") or "")
    if phase in ("Succeeded", "Failed"):
        return None
    ip = str(status.get("podIP") or "")
    if not ip:
        for item in status.get("podIPs") or []:
            if isinstance(item, dict) and item.get("ip"):
                ip = str(item["ip"])
                break
    ports: dict[str, int] = {}
    sa = "default"
    if pod.spec is not None:
        sa = pod.spec.service_account_or_default
        for c in pod.spec.containers:
            for cp in c.ports:
                if cp.name and cp.name not in ports:
                    ports[cp.name] = cp.container_port
    conds = _conditions(status)
    if pod.metadata.deletion_timestamp:
        health = "DRAINING"
    elif "Ready" in conds:
        health = "HEALTHY" if conds["Ready"] == "True" else "UNHEALTHY"
    else:
        health = "HEALTHY" if phase == "Running" else "UNHEALTHY"
    labels = dict(pod.metadata.labels)
    return Workload("Pod", e.namespace, e.name, ip, labels, ports, sa, health,
                    _locality_from_labels(labels), 1, e.origin)


def _we_workload(e: Entry) -> Workload:
    spec = e.obj.spec
    conds = _conditions(e.obj.status)
    health = "UNHEALTHY" if conds.get("Healthy") == "False" else "HEALTHY"
    labels = dict(spec.labels)
    for k, v in e.obj.metadata.labels.items():
        labels.setdefault(k, v)
    return Workload(
        "WorkloadEntry", e.namespace, e.name, spec.address, labels, dict(spec.ports),
        spec.service_account or "default", health,
        spec.locality or _locality_from_labels(labels), spec.weight or 1, e.origin,
    )


class _WorkloadIndex:
    """Workloads by namespace and by (namespace, label, value), to select quickly."""

    def __init__(self, workloads: Iterable[Workload]) -> None:
        self.by_ns: dict[str, list[Workload]] = {}
        self.by_label: dict[tuple[str, str, str], list[Workload]] = {}
        for w in workloads:
            self.by_ns.setdefault(w.namespace, []).append(w)
            for k, v in w.labels.items():
                self.by_label.setdefault((w.namespace, k, v), []).append(w)

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[Workload]:
        if not selector:
            return []
        best: list[Workload] | None = None
        for k, v in selector.items():
            bucket = self.by_label.get((namespace, k, v))
            if not bucket:
                return []
            if best is None or len(bucket) < len(best):
                best = bucket
        assert best is not None
        return [w for w in best if _selects(selector, w.labels)]


# --------------------------------------------------------------------------- the registry


class Registry(Memoized):
    """Services, workloads and endpoints of one ConfigView. Immutable once built."""

    def __init__(
        self,
        services: Iterable[Service],
        workloads: Iterable[Workload],
        endpoints: Mapping[tuple[str, str, int], tuple[Endpoint, ...]],
        *,
        view: ConfigView | None = None,
        domain_suffix: str = "cluster.local",
    ) -> None:
        self.view = view
        self.domain_suffix = domain_suffix
        self.services: tuple[Service, ...] = tuple(sorted(services, key=lambda s: (s.hostname, s.namespace, s.name)))
        self.workloads: tuple[Workload, ...] = tuple(
            sorted(workloads, key=lambda w: (w.namespace, w.kind, w.name))
        )
        self._endpoints = dict(endpoints)
        by_host: dict[str, list[Service]] = {}
        by_ns: dict[str, list[Service]] = {}
        for s in self.services:
            by_host.setdefault(s.hostname, []).append(s)
            by_ns.setdefault(s.namespace, []).append(s)
        self.by_host: dict[str, tuple[Service, ...]] = {h: tuple(v) for h, v in by_host.items()}
        self.by_namespace: dict[str, tuple[Service, ...]] = {n: tuple(v) for n, v in by_ns.items()}
        self._workload_by_key = {(w.kind, w.namespace, w.name): w for w in self.workloads}
        self._workloads_by_ip: dict[str, list[Workload]] = {}
        for w in self.workloads:
            if w.address:
                self._workloads_by_ip.setdefault(w.address, []).append(w)
        super().__init__()  # Memoized: memo(), drop_caches()

    # ------------------------------------------------------------------ reading

    def service(self, hostname: str, namespace: str | None = None) -> Service | None:
        """The service for a host name (the one in ``namespace`` when several namespaces
        define it, else the first in name order)."""
        found = self.by_host.get(hostname, ())
        if namespace is not None:
            for s in found:
                if s.namespace == namespace:
                    return s
        return found[0] if found else None

    def endpoints(self, service: Service, port: int) -> tuple[Endpoint, ...]:
        """Endpoints behind ``service`` on service port ``port`` (empty if none)."""
        return self._endpoints.get((service.namespace, service.hostname, port), ())

    def workload(self, namespace: str, name: str, kind: str = "Pod") -> Workload | None:
        return self._workload_by_key.get((kind, namespace, name))

    def workloads_at(self, address: str) -> tuple[Workload, ...]:
        return tuple(self._workloads_by_ip.get(address, ()))

    def services_selecting(self, namespace: str, labels: Mapping[str, str]) -> tuple[Service, ...]:
        """Services of ``namespace`` whose selector matches ``labels`` (the services a workload
        with these labels backs): Kubernetes Services and MESH_INTERNAL ServiceEntries with a
        workloadSelector."""
        out = []
        for s in self.by_namespace.get(namespace, ()):
            if s.selector and s.resolution == "EDS" and _selects(s.selector, labels):
                if s.kind == "Service" or s.location == "MESH_INTERNAL":
                    out.append(s)
        return tuple(out)

    def __repr__(self) -> str:
        return f"<Registry {len(self.services)} services, {len(self.workloads)} workloads>"

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, view: ConfigView) -> Registry:
        """The registry of a view (pure: reads nothing else)."""
        suffix = view.domain_suffix
        workloads: list[Workload] = []
        for e in view.entries("Pod"):
            w = _pod_workload(e)
            if w is not None:
                workloads.append(w)
        for e in view.entries("WorkloadEntry"):
            workloads.append(_we_workload(e))
        index = _WorkloadIndex(workloads)
        services: list[Service] = []
        endpoints: dict[tuple[str, str, int], tuple[Endpoint, ...]] = {}
        for e in view.entries("Service"):
            svc, eps = _k8s_service(view, e, index, suffix)
            services.append(svc)
            endpoints.update(eps)
        for e in view.entries("ServiceEntry"):
            for svc, eps in _service_entry(view, e, index):
                services.append(svc)
                endpoints.update(eps)
        return cls(services, workloads, endpoints, view=view, domain_suffix=suffix)


# --------------------------------------------------------------------------- Kubernetes Service


def _endpoint(w: Workload, port: int, healthy_anyway: bool = False) -> Endpoint:
    health = w.health
    if healthy_anyway and health == "UNHEALTHY":
        health = "HEALTHY"
    return Endpoint(w.address, port, w.labels, health, w.locality, w.weight, w.service_account,
                    f"{w.kind} {w.namespace}/{w.name}")


def _workload_port(w: Workload, sp: ServicePort) -> int | None:
    """The port a workload serves a service port on, or None if it does not."""
    if w.kind == "WorkloadEntry":
        if sp.name and sp.name in w.ports:
            return w.ports[sp.name]
        tp = sp.target_port
        if isinstance(tp, str):
            return w.ports.get(tp)
        return tp or sp.port
    return resolve_target_port(sp, w)


def resolve_target_port(sp: ServicePort, pod: Workload | None) -> int | None:
    """Where a pod serves a Service port: ``targetPort`` as a number, or the pod's container
    port of that name (None when there is no such pod or port); no targetPort: the port."""
    tp = sp.target_port
    if tp is None or tp == 0:
        return sp.port
    if isinstance(tp, int):
        return tp
    if tp.isdigit():
        return int(tp)
    return pod.ports.get(tp) if pod is not None else None


def _k8s_service(view: ConfigView, e: Entry, index: _WorkloadIndex, suffix: str):
    obj = e.obj
    spec = obj.spec
    hostname = f"{e.name}.{e.namespace}.svc.{suffix}"
    ports = tuple(
        ServicePort(p.name, p.port, service_port_protocol(p.port, p.name, p.protocol, p.app_protocol or ""),
                    p.target_port)
        for p in spec.ports
    )
    headless = spec.cluster_ip == "None"
    cluster_ip = spec.cluster_ip if spec.cluster_ip and not headless else None
    addresses = tuple(a for a in (spec.cluster_ips or ([cluster_ip] if cluster_ip else [])) if a and a != "None")
    eps: dict[tuple[str, str, int], tuple[Endpoint, ...]] = {}
    resolution = "EDS"
    selector = dict(spec.selector) if spec.selector else None
    if spec.type == "ExternalName" and spec.external_name:
        resolution = "DNS"
        selector = None
        for sp in ports:
            eps[(e.namespace, hostname, sp.port)] = (
                Endpoint(spec.external_name, sp.port, {}, workload=e.origin),
            )
    elif selector:
        selected = index.select(e.namespace, selector)
        for sp in ports:
            out = []
            for w in selected:
                if not w.address:
                    continue
                port = _workload_port(w, sp)
                if port:
                    out.append(_endpoint(w, port, spec.publish_not_ready_addresses))
            eps[(e.namespace, hostname, sp.port)] = tuple(sorted(out, key=lambda x: (x.address, x.port)))
    svc = Service(
        hostname, e.namespace, e.name, "Service", ports, e.origin, cluster_ip, addresses, selector,
        resolution, "MESH_INTERNAL", view.export_to(e), headless, dict(obj.metadata.labels),
    )
    return svc, eps


# --------------------------------------------------------------------------- ServiceEntry

_RESOLUTION = {"STATIC": "EDS", "DNS": "DNS", "DNS_ROUND_ROBIN": "DNS", "DYNAMIC_DNS": "DNS", "NONE": "NONE"}


def _service_entry(view: ConfigView, e: Entry, index: _WorkloadIndex):
    spec = e.obj.spec
    ports = tuple(
        ServicePort(p.name, p.number, service_entry_port_protocol(p.protocol), p.target_port or None)
        for p in spec.ports
    )
    resolution = _RESOLUTION.get(spec.resolution, "NONE")
    export_to = view.export_to(e)
    selector = dict(spec.workload_selector.labels) if spec.workload_selector is not None else None
    addresses = tuple(spec.addresses)
    cluster_ip = addresses[0] if addresses and "/" not in addresses[0] else None
    selected: list[Workload] = []
    if selector is not None and resolution != "NONE":
        selected = index.select(e.namespace, selector)
    out = []
    for raw_host in spec.hosts:
        hostname = raw_host.lower()
        eps: dict[tuple[str, str, int], tuple[Endpoint, ...]] = {}
        for sp in ports:
            found: list[Endpoint] = []
            if resolution == "NONE":
                pass
            elif spec.endpoints:
                for we in spec.endpoints:
                    if not we.address or we.address.startswith("unix://"):
                        continue
                    port = we.ports.get(sp.name) if sp.name else None
                    port = port or (sp.target_port if isinstance(sp.target_port, int) else None) or sp.port
                    found.append(Endpoint(
                        we.address, port, dict(we.labels), "HEALTHY", we.locality or None,
                        we.weight or 1, we.service_account or "default", e.origin,
                    ))
            elif selector is not None:
                for w in selected:
                    if not w.address:
                        continue
                    if w.kind == "WorkloadEntry":
                        port = w.ports.get(sp.name) or sp.target_port or sp.port
                    else:
                        port = sp.target_port or sp.port
                    if isinstance(port, int):
                        found.append(_endpoint(w, port))
            elif resolution == "DNS" and not hostname.startswith("*"):
                found.append(Endpoint(hostname, sp.target_port if isinstance(sp.target_port, int) else sp.port,
                                      {}, workload=e.origin))
            eps[(e.namespace, hostname, sp.port)] = tuple(sorted(found, key=lambda x: (x.address, x.port)))
        svc = Service(
            hostname, e.namespace, e.name, "ServiceEntry", ports, e.origin, cluster_ip, addresses,
            selector, resolution, spec.location, export_to, False, dict(e.obj.metadata.labels),
        )
        out.append((svc, eps))
    return out
