"""The translation context of one (ConfigView, Registry) pair, and its caches.

Most proxies of a mesh share most of their configuration: every sidecar of a namespace (with
the same Sidecar resource) sees the same services, the same VirtualServices and the same
DestinationRules. The context builds each piece once and hands the same (immutable by
convention) objects to every proxy that needs it:

================================  ==========================================================
cache                             key
================================  ==========================================================
clusters of a service port        (service, port, chosen DestinationRule)
endpoints of a cluster            (service, port, subset labels)
DestinationRule choice            (client namespace, host, selecting workload-selector rules)
routes of a VirtualService        (VirtualService, port, gateways, client namespace and
                                  source-label key -- the last two only when a match uses
                                  sourceLabels/sourceNamespace)
virtual host                      (service, port, same namespace as the client?, routes)
sidecar scope                     (namespace, Sidecar resource)
outbound configuration            (scope, DestinationRule selector key, source-label key,
                                  interception mode)
================================  ==========================================================

Every key is made of immutable inputs, and the caches belong to the context, which belongs to
the registry built from the view (``registry.memo``), so ``translate`` stays a pure function
of (view, registry, node) and a new configuration starts with empty caches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgspec

from pilotfish.controlplane.translate import security
from pilotfish.controlplane.translate.hosts import service_domains
from pilotfish.controlplane.translate.index import (
    ConsolidatedDR,
    MeshIndex,
    VSInfo,
    labels_match,
    mesh_index,
)
from pilotfish.controlplane.translate.policy import Policy, cluster_settings, effective_policy
from pilotfish.controlplane.translate.routes import (
    RouteCtx,
    cluster_name,
    default_route,
    route_clusters,
    routes_for_vs,
)
from pilotfish.controlplane.view import ConfigView
from pilotfish.proxy import model
from pilotfish.registry import Registry, Service, ServicePort

__all__ = ["Context", "context_for", "BLACKHOLE", "PASSTHROUGH", "INBOUND_PASSTHROUGH"]

BLACKHOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"

STATIC_CLUSTERS = {
    BLACKHOLE: model.Cluster(name=BLACKHOLE, type="STATIC", metadata={"origin": "default"}),
    PASSTHROUGH: model.Cluster(name=PASSTHROUGH, type="ORIGINAL_DST", lb_policy="PASSTHROUGH",
                               metadata={"origin": "default"}),
    INBOUND_PASSTHROUGH: model.Cluster(name=INBOUND_PASSTHROUGH, type="ORIGINAL_DST", lb_policy="PASSTHROUGH",
                                       metadata={"origin": "default"}),
}


class ClusterBlock:
    """The sorted clusters (and endpoints) of a set of service ports, shared by every proxy
    whose scope yields the same cluster sets."""

    __slots__ = ("clusters", "names", "name_set", "endpoints", "endpoint_names")

    def __init__(self, groups: list, statics: tuple[str, ...]) -> None:
        clusters: dict[str, model.Cluster] = {n: STATIC_CLUSTERS[n] for n in statics}
        endpoints: dict[str, model.ClusterEndpoints] = {}
        for group in groups:
            for c, ce in group:
                clusters[c.name] = c
                if ce is not None:
                    endpoints[c.name] = ce
        self.names = sorted(clusters)
        self.name_set = frozenset(self.names)
        self.clusters = [clusters[n] for n in self.names]
        self.endpoint_names = sorted(endpoints)
        self.endpoints = [endpoints[n] for n in self.endpoint_names]


class Context:
    def __init__(self, view: ConfigView, registry: Registry) -> None:
        self.view = view
        self.registry = registry
        self.index: MeshIndex = mesh_index(view)
        self.suffix = view.domain_suffix
        self.lock = threading.Lock()
        self._clusters: dict[Any, list[tuple[model.Cluster, model.ClusterEndpoints | None]]] = {}
        self._eps: dict[Any, list[model.Endpoint]] = {}
        self._ce: dict[Any, model.ClusterEndpoints] = {}
        self._dr: dict[Any, ConsolidatedDR | None] = {}
        self._routes: dict[Any, list[model.Route]] = {}
        self._default_routes: dict[str, list[model.Route]] = {}
        self._vh: dict[Any, model.VirtualHost] = {}
        self._patched: dict[Any, list[model.Route]] = {}
        self._refs: dict[int, tuple[list[model.Route], frozenset[str]]] = {}
        self._tcp_chains: dict[Any, model.FilterChain] = {}
        self._blocks: dict[Any, ClusterBlock] = {}
        #: caches used by the sidecar/gateway/inbound builders
        self.scopes: dict[Any, Any] = {}
        self.outbound: dict[Any, Any] = {}
        self.gateways: dict[Any, Any] = {}
        self.inbound: dict[Any, Any] = {}
        self.selecting: dict[Any, Any] = {}
        single: dict[str, int | None] = {}
        for host, svcs in registry.by_host.items():
            s = svcs[0]
            ports = [p for p in s.ports if p.protocol != "UDP"]
            single[host] = ports[0].port if len(ports) == 1 else None
        self.single_port: Callable[[str], int | None] = single.get

    # ------------------------------------------------------------------ memo helper

    @staticmethod
    def cached(cache: dict, key: Any, make: Callable[[], Any]) -> Any:
        try:
            return cache[key]
        except KeyError:
            pass
        value = make()
        return cache.setdefault(key, value)

    # ------------------------------------------------------------------ DestinationRules

    def destination_rule(self, proxy_ns: str, svc: Service, selected: frozenset[int]) -> ConsolidatedDR | None:
        key = (proxy_ns, svc.hostname, svc.namespace, selected)
        return self.cached(self._dr, key,
                           lambda: self.index.destination_rule(proxy_ns, svc.hostname, svc.namespace, selected))

    # ------------------------------------------------------------------ endpoints

    def _model_endpoints(self, svc: Service, port: int) -> list[model.Endpoint]:
        def make() -> list[model.Endpoint]:
            out = []
            for e in self.registry.endpoints(svc, port):
                if not 1 <= e.port <= 65535:
                    continue
                out.append(model.Endpoint(address=e.address, port=e.port, weight=max(1, e.weight),
                                          labels=dict(e.labels), locality=e.locality, health=e.health))
            return out

        return self.cached(self._eps, (svc.key, port), make)

    def cluster_endpoints(self, name: str, svc: Service, port: int,
                          subset_labels: dict[str, str] | None) -> model.ClusterEndpoints:
        key = (name, svc.key, port, frozenset(subset_labels.items()) if subset_labels else None)

        def make() -> model.ClusterEndpoints:
            eps = self._model_endpoints(svc, port)
            if subset_labels:
                eps = [e for e in eps if labels_match(subset_labels, e.labels)]
            return model.ClusterEndpoints(cluster=name, endpoints=eps)

        return self.cached(self._ce, key, make)

    # ------------------------------------------------------------------ clusters

    def service_clusters(self, svc: Service, sp: ServicePort, dr: ConsolidatedDR | None
                         ) -> list[tuple[model.Cluster, model.ClusterEndpoints | None]]:
        """The default cluster of a service port and one per subset of its DestinationRule."""
        key = (svc.key, sp.port, dr.id if dr is not None else None)
        return self.cached(self._clusters, key, lambda: self._build_clusters(svc, sp, dr))

    def _build_clusters(self, svc: Service, sp: ServicePort, dr: ConsolidatedDR | None):
        out = []
        host_tp = dr.traffic_policy if dr is not None else None
        meta_base: dict[str, Any] = {"origin": dr.origin if dr is not None else "default",
                                     "service": svc.hostname, "port": sp.port}
        if dr is not None and dr.merged_from:
            meta_base["merged_from"] = dr.merged_from
        variants: list[tuple[str, Any, dict[str, str] | None]] = [("", None, None)]
        if dr is not None:
            variants += [(s.name, s.traffic_policy, dict(s.labels)) for s in dr.subsets]
        for subset, subset_tp, labels in variants:
            name = cluster_name(svc.hostname, sp.port, subset)
            policy = effective_policy(host_tp, subset_tp, sp.port)
            out.append(self._cluster(name, svc, sp, policy, subset, labels, meta_base))
        return out

    def _cluster(self, name: str, svc: Service, sp: ServicePort, policy: Policy, subset: str,
                 labels: dict[str, str] | None, meta_base: dict[str, Any]):
        kw = cluster_settings(policy)
        if svc.resolution == "NONE":
            kw["type"] = "ORIGINAL_DST"
            kw["lb_policy"] = "PASSTHROUGH"
            kw.pop("hash_policy", None)
        meta = dict(meta_base)
        if subset:
            meta["subset"] = subset
        tls = security.upstream_tls(svc, policy.tls)
        cluster = model.Cluster(name=name, protocol="tcp" if sp.is_tcp else "http1", tls=tls, metadata=meta, **kw)
        if cluster.type == "ORIGINAL_DST":
            return cluster, None
        return cluster, self.cluster_endpoints(name, svc, sp.port, labels)

    def cluster_block(self, groups: list, statics: tuple[str, ...]) -> ClusterBlock:
        """The clusters of ``groups`` (lists returned by :meth:`service_clusters`, which are
        cached, so their identities name their content) plus the named static clusters."""
        key = (tuple(map(id, groups)), statics)
        return self.cached(self._blocks, key, lambda: ClusterBlock(groups, statics))

    # ------------------------------------------------------------------ routes

    def vs_routes(self, vs: VSInfo, port: int, ctx: RouteCtx, src_key: tuple[int, ...],
                  gateway_mode: bool = False) -> list[model.Route]:
        client = (ctx.namespace, src_key) if vs.sensitive else None
        key = (vs.id, port, ctx.gateways, client, gateway_mode)
        return self.cached(self._routes, key, lambda: routes_for_vs(vs, port, ctx))

    def default_routes(self, host: str, port: int) -> list[model.Route]:
        name = cluster_name(host, port)
        return self.cached(self._default_routes, name, lambda: [default_route(name)])

    def referenced(self, routes: list[model.Route]) -> frozenset[str]:
        """The clusters a (cached) route list refers to."""
        got = self._refs.get(id(routes))
        if got is None or got[0] is not routes:
            got = (routes, frozenset(c for r in routes for c in route_clusters(r)))
            self._refs[id(routes)] = got
        return got[1]

    def resolved(self, routes: list[model.Route], clusters: Any, scope_key: Any) -> list[model.Route]:
        """``routes`` with destinations that name no known cluster (not in ``clusters``) sent
        to BlackHoleCluster (Istio leaves them dangling, and Envoy answers 503 NC; our
        snapshots must resolve every reference) and such mirrors dropped."""
        refs = self.referenced(routes)
        if all(map(clusters.__contains__, refs)):
            return routes
        known = clusters.__contains__
        key = (id(routes), scope_key)

        def patch() -> list[model.Route]:
            out = []
            for r in routes:
                if r.route is None or all(known(c) for c in route_clusters(r)):
                    out.append(r)
                    continue
                a = r.route
                clusters = [w if known(w.cluster) else msgspec.structs.replace(w, cluster=BLACKHOLE)
                            for w in a.clusters]
                mirrors = [m for m in a.mirrors if known(m.cluster)]
                out.append(msgspec.structs.replace(r, route=msgspec.structs.replace(a, clusters=clusters,
                                                                                   mirrors=mirrors)))
            return out

        got = self.cached(self._patched, key, patch)
        return got

    def virtual_host(self, svc: Service, port: int, proxy_ns: str, routes: list[model.Route]) -> model.VirtualHost:
        same = svc.namespace == proxy_ns
        key = (svc.key, port, same, id(routes))

        def make() -> model.VirtualHost:
            domains = service_domains(svc.hostname, port, proxy_ns, self.suffix, svc.addresses)
            return model.VirtualHost(name=f"{svc.hostname}:{port}", domains=domains, routes=routes)

        return self.cached(self._vh, key, make)

    def tcp_chain(self, svc: Service, port: int, target: str) -> model.FilterChain:
        """The virtualOutbound chain of a TCP service port (matched by its addresses)."""
        key = (svc.key, port, target)

        def make() -> model.FilterChain:
            tcp = model.TcpProxy(cluster=target, stat_prefix=target)
            if not svc.addresses:
                return model.FilterChain(name=f"0.0.0.0_{port}", destination_port=port, tcp=tcp)
            ips = [a if "/" in a else (f"{a}/128" if ":" in a else f"{a}/32") for a in svc.addresses]
            return model.FilterChain(name=f"{svc.addresses[0]}_{port}", destination_port=port,
                                     destination_ips=ips, tcp=tcp)

        return self.cached(self._tcp_chains, key, make)


def context_for(view: ConfigView, registry: Registry) -> Context:
    """The context of (view, registry): cached on the registry when it was built from this
    view, else a fresh one (correct, just not shared)."""
    if getattr(registry, "view", None) is view:
        return registry.memo("translate.context", lambda: Context(view, registry))
    return Context(view, registry)
