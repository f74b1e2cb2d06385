"""Helpers shared by analyzers: host names, label selectors, exportTo scopes, mesh membership.

These follow Istio's semantics (host matching with wildcards, Kubernetes short names resolved
against a namespace, ``exportTo`` visibility), written for the raw dict specs analyzers read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .core import Context, Obj

MESH_GATEWAY = "mesh"
EXPORT_ALL = "*"
EXPORT_LOCAL = "."
INJECTION_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
SIDECAR_INJECT = "sidecar.istio.io/inject"
AMBIENT_REDIRECTION = "ambient.istio.io/redirection"
ISTIO_PROXY = "istio-proxy"
JWT_CLAIM_HEADER_PREFIX = "@request.auth.claims"
# Namespaces Istio never injects and skips in several checks.
SYSTEM_NAMESPACES = frozenset(
    {"kube-system", "kube-public", "kube-node-lease", "local-path-storage"}
)


# -- small accessors -------------------------------------------------------------------------


def as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def as_str(v: Any) -> str:
    return "" if v is None else str(v)


def as_int(v: Any, default: int = 0) -> int:
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    try:
        return int(str(v))
    except (TypeError, ValueError):
        return default


def str_map(v: Any) -> dict[str, str]:
    """A label/selector map with string values (YAML may give ints or bools)."""
    if not isinstance(v, dict):
        return {}
    out: dict[str, str] = {}
    for k, val in v.items():
        if isinstance(val, bool):
            out[str(k)] = "true" if val else "false"
        else:
            out[str(k)] = "" if val is None else str(val)
    return out


# -- label selectors -------------------------------------------------------------------------


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Kubernetes equality selector built from a map: every key present with that value. An
    empty selector matches everything."""
    for k, v in selector.items():
        if k not in labels or labels[k] != v:
            return False
    return True


def selector_string(selector: Mapping[str, str]) -> str:
    """How Kubernetes prints a selector made from a map: ``k1=v1,k2=v2``, keys sorted."""
    return ",".join(f"{k}={selector[k]}" for k in sorted(selector))


def workload_selector(obj: Obj) -> dict[str, str] | None:
    """``spec.selector.matchLabels`` of security/telemetry policies (None when absent)."""
    sel = obj.spec.get("selector")
    if not isinstance(sel, dict):
        return None
    return str_map(sel.get("matchLabels"))


# -- hosts -----------------------------------------------------------------------------------


def cluster_domain(ctx: Context) -> str:
    return as_str(ctx.mesh.get("clusterDomain")) or "cluster.local"


def to_fqdn(ns: str, host: str, domain: str = "cluster.local") -> str:
    """Kubernetes short name ``reviews`` -> ``reviews.<ns>.svc.<domain>``; wildcards and names
    with a dot are left alone."""
    if host.startswith("*") or "." in host:
        return host
    return f"{host}.{ns}.svc.{domain}"


def fqdn_parts(fqdn: str, domain: str = "cluster.local") -> tuple[str, str] | None:
    """``name.ns.svc.<domain>`` -> (ns, name); None for other names."""
    suffix = f".svc.{domain}"
    if not fqdn.endswith(suffix):
        return None
    head = fqdn[: -len(suffix)]
    parts = head.split(".")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[1], parts[0]


def host_full_name(ns: str, host: str, domain: str = "cluster.local") -> tuple[str, str]:
    """The (namespace, name) a destination host refers to: from the FQDN when it is one, else a
    short name in ``ns`` (Istio's ``GetResourceNameFromHost``)."""
    parts = fqdn_parts(host, domain)
    if parts:
        return parts
    return ns, host


def host_matches(a: str, b: str) -> bool:
    """Istio's ``host.Name.Matches``: equal, or a wildcard on either side covers the other."""
    aw = a.startswith("*")
    bw = b.startswith("*")
    if aw:
        if bw:
            return b[1:].endswith(a[1:]) if len(a) < len(b) else a[1:].endswith(b[1:])
        return b.endswith(a[1:])
    if bw:
        return a.endswith(b[1:])
    return a == b


def names_for_namespace(hosts: Iterable[str], ns: str) -> list[str]:
    """Gateway/Sidecar ``ns/host`` entries visible from ``ns``, with the namespace removed."""
    out = []
    for h in hosts:
        if "/" in h:
            hns, name = h.split("/", 1)
            if hns in ("*", ns):
                out.append(name)
        else:
            out.append(h)
    return out


def export_scopes(export_to: Any, ns: str) -> set[str]:
    """The namespaces a resource is visible in: {"*"} when exported everywhere."""
    items = [as_str(e) for e in as_list(export_to)]
    if not items or EXPORT_ALL in items:
        return {EXPORT_ALL}
    return {ns if e == EXPORT_LOCAL else e for e in items}


# -- services and service entries --------------------------------------------------------------


class ServiceRecord:
    """A service as destination checks see it: a Kubernetes Service or a ServiceEntry host."""

    __slots__ = ("obj", "hosts", "ports", "workload_selector")

    def __init__(
        self, obj: Obj, hosts: list[str], ports: list[dict[str, Any]], wsel: dict[str, str]
    ):
        self.obj = obj
        self.hosts = hosts
        self.ports = ports
        self.workload_selector = wsel

    def port_numbers(self) -> list[int]:
        return [as_int(p.get("number", p.get("port"))) for p in self.ports]


def service_host_map(ctx: Context) -> dict[tuple[str, str], ServiceRecord]:
    """(scope, fqdn) -> service for every ServiceEntry host and Kubernetes Service, the scope
    being the namespace it is visible in or "*" (Istio's ``InitServiceEntryHostMap``)."""

    def build() -> dict[tuple[str, str], ServiceRecord]:
        domain = cluster_domain(ctx)
        out: dict[tuple[str, str], ServiceRecord] = {}
        for se in ctx.all("ServiceEntry"):
            spec = se.spec
            hosts = [as_str(h) for h in as_list(spec.get("hosts"))]
            ports = [as_dict(p) for p in as_list(spec.get("ports"))]
            rec = ServiceRecord(
                se, hosts, ports, str_map(as_dict(spec.get("workloadSelector")).get("labels"))
            )
            scopes = export_scopes(spec.get("exportTo"), se.ns)
            for h in hosts:
                fq = to_fqdn(se.ns, h, domain)
                for scope in scopes:
                    out[(scope, fq)] = rec
        for svc in ctx.all("Service"):
            spec = svc.spec
            ports = [
                {
                    "number": as_int(p.get("port")),
                    "name": as_str(p.get("name")),
                    "protocol": as_str(p.get("protocol")),
                }
                for p in (as_dict(x) for x in as_list(spec.get("ports")))
            ]
            fq = to_fqdn(svc.ns, svc.name, domain)
            rec = ServiceRecord(svc, [fq], ports, {})
            anno = svc.annotations.get("networking.istio.io/exportTo")
            if anno:
                scopes = {
                    svc.ns if s == EXPORT_LOCAL else s
                    for s in (x.strip() for x in str(anno).split(","))
                }
            else:
                scopes = {EXPORT_ALL}
            for scope in scopes:
                out[(scope, fq)] = rec
        return out

    return ctx.cached("service_host_map", build)


def lookup_destination(
    ctx: Context, source_ns: str, export_to: Any, host: str
) -> ServiceRecord | None:
    """The service a destination ``host`` resolves to from a resource in ``source_ns`` (with the
    given ``exportTo``), or None (Istio's ``GetDestinationHost``)."""
    services = service_host_map(ctx)
    domain = cluster_domain(ctx)
    fq = to_fqdn(source_ns, host, domain)
    rec = services.get((EXPORT_ALL, fq))
    if rec:
        return rec
    exports = [as_str(e) for e in as_list(export_to)]
    if not exports:
        rec = services.get((source_ns, fq))
        if rec:
            return rec
    else:
        for e in exports:
            rec = services.get((source_ns if e == EXPORT_LOCAL else e, fq))
            if rec:
                return rec
    # Wildcard service entries visible here, the costly check last.
    bare = host[1:] if host.startswith("*") else host
    for (scope, se_host), rec in services.items():
        if not se_host.startswith("*") or scope not in (EXPORT_ALL, source_ns):
            continue
        if bare.endswith(se_host[1:]):
            return rec
    return None


# -- workloads and mesh membership ------------------------------------------------------------


def containers(pod_spec: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    out = [as_dict(c) for c in as_list(pod_spec.get("containers"))]
    if init:
        out += [as_dict(c) for c in as_list(pod_spec.get("initContainers"))]
    return out


def has_istio_proxy(pod_spec: dict[str, Any]) -> bool:
    return any(c.get("name") == ISTIO_PROXY and c.get("image") for c in containers(pod_spec))


def namespace_obj(ctx: Context, ns: str) -> Obj | None:
    return ctx.find("Namespace", "", ns)


def _inject_value(meta: Mapping[str, Any]) -> str | None:
    v = meta.get(SIDECAR_INJECT)
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).lower()


def in_mesh(
    ctx: Context,
    ns: str,
    labels: Mapping[str, Any],
    annotations: Mapping[str, Any],
    pod_spec: dict[str, Any],
) -> bool:
    """Whether a workload gets a sidecar (Istio's ``inMesh``): it already has one, or its
    ``sidecar.istio.io/inject`` label or annotation says so, or its namespace is labelled
    ``istio-injection=enabled``."""
    if has_istio_proxy(pod_spec):
        return True
    for meta in (labels, annotations):
        v = _inject_value(meta)
        if v is not None:
            return v == "true"
    nso = namespace_obj(ctx, ns)
    if nso is not None:
        return nso.labels.get(INJECTION_LABEL) == "enabled"
    return False


def pod_in_mesh(ctx: Context, pod: Obj) -> bool:
    return in_mesh(ctx, pod.ns, pod.labels, pod.annotations, pod.spec)


def template_of(obj: Obj) -> dict[str, Any]:
    """The pod template of a workload controller (Deployment, StatefulSet, ... CronJob)."""
    spec = obj.spec
    if obj.kind == "CronJob":
        spec = as_dict(as_dict(spec.get("jobTemplate")).get("spec"))
    return as_dict(spec.get("template"))


def deployment_in_mesh(ctx: Context, dep: Obj) -> bool:
    tpl = template_of(dep)
    meta = as_dict(tpl.get("metadata"))
    return in_mesh(
        ctx,
        dep.ns,
        str_map(meta.get("labels")),
        str_map(meta.get("annotations")),
        as_dict(tpl.get("spec")),
    )


def pod_in_ambient(pod: Obj) -> bool:
    return pod.annotations.get(AMBIENT_REDIRECTION) == "enabled"


def namespace_in_ambient(nso: Obj | None) -> bool:
    if nso is None:
        return False
    labels = nso.labels
    if labels.get(INJECTION_LABEL) == "enabled":
        return False
    if labels.get(REVISION_LABEL):
        return False
    return labels.get(DATAPLANE_MODE_LABEL) == "ambient"


def known_namespaces(ctx: Context) -> set[str]:
    """Namespaces that exist for Pilotfish: declared ones, and any a resource lives in."""

    def build() -> set[str]:
        out = {o.name for o in ctx.all("Namespace")}
        out.update(o.ns for o in ctx.objs if o.ns)
        return out

    return ctx.cached("known_namespaces", build)


def root_namespace(ctx: Context) -> str:
    return as_str(ctx.mesh.get("rootNamespace")) or ctx.istio_namespace


def pods_by_namespace(ctx: Context) -> dict[str, list[Obj]]:
    def build() -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {}
        for p in ctx.all("Pod"):
            out.setdefault(p.ns, []).append(p)
        return out

    return ctx.cached("pods_by_namespace", build)
