"""A sidecar's outbound side: what it sees (its scope) and the listeners, route tables and
clusters for it.

**Scope.** By default a sidecar sees every service, VirtualService and DestinationRule
exported to its namespace. A ``Sidecar`` resource narrows that (the one whose
workloadSelector selects the workload, else its namespace's default, else the root
namespace's default): each ``egress`` listener lists ``namespace/host`` patterns (``*/``,
``./`` for the proxy's own namespace, ``~/`` for none; hosts may be wildcards); a listener with
a ``port`` decides for that port, the listener without port for the others. A service is seen
on a port when a pattern of that port's listener names its namespace and covers its host; a
VirtualService when a pattern names its namespace and overlaps one of its hosts.

**VirtualService per host.** For each service the VirtualService that applies is the oldest
(creation time, then name, then namespace) visible one naming the host exactly, else the one
with the most specific wildcard host covering it. Several VirtualServices for one host are
*not* merged on sidecars (Istio merges them only on gateways): the oldest wins and the others
are ignored for that host. A service without VirtualService gets one route to
``outbound|<port>||<host>`` with Istio's default retries and no timeout.

**Outbound listeners.**

- ``REDIRECT`` (iptables interception, Istio's default): ``virtualOutbound`` on 15001 with
  ``use_original_dst``. One filter chain per HTTP port (``destination_port``) using the route
  table named by the port (``"9080"``), whose virtual hosts are every visible HTTP service on
  that port; one TCP chain per TCP service port, to its cluster, matched by the service's
  addresses (``destination_ips``) when known, else by port alone (a TCP service without address
  on a port that already has a chain is unreachable, as with Istio's listener conflicts); a
  default chain to ``PassthroughCluster`` (outbound traffic policy ``ALLOW_ANY``, the
  default) or ``BlackHoleCluster`` (``REGISTRY_ONLY``). Each route table ends with the
  ``allow_any`` virtual host (``*`` -> PassthroughCluster) or ``block_all`` (``*`` -> 502).
- ``NONE`` (no interception; applications use the sidecar as an HTTP proxy): one listener
  ``127.0.0.1_15001`` whose route table ``http_proxy`` holds the virtual hosts of all ports;
  as in Istio's ``http_proxy`` table, only port-80 virtual hosts keep their port-less
  domains, the others only ``host:port`` forms, so the port in the Host header picks the
  service port. Requests for hosts outside the registry get 404 (there is no original
  destination to pass through to). TCP services are not reachable through the sidecar in
  this mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pilotfish.controlplane.translate.context import (
    BLACKHOLE,
    INBOUND_PASSTHROUGH,
    PASSTHROUGH,
    Context,
)
from pilotfish.controlplane.translate.hosts import is_wildcard, overlaps, split_ns_host, subset_of
from pilotfish.controlplane.translate.index import VSInfo
from pilotfish.controlplane.translate.routes import (
    SIDECAR_GATEWAYS,
    RouteCtx,
    cluster_name,
    tcp_destination,
)
from pilotfish.controlplane.view import Entry
from pilotfish.proxy import model
from pilotfish.registry import Service, ServicePort

__all__ = ["Scope", "scope_for", "outbound_template"]

_ALL = (("*", "*"),)


@dataclass(eq=False)
class Scope:
    namespace: str
    sidecar: Entry | None
    #: visible services and, for each, the ports it is visible on (UDP left out)
    services: list[tuple[Service, tuple[ServicePort, ...]]] = field(default_factory=list)
    virtual_services: list[VSInfo] = field(default_factory=list)
    vs_for_host: dict[str, VSInfo] = field(default_factory=dict)
    #: VirtualService hosts that are no visible service (only used on port 80, as Istio)
    other_hosts: list[tuple[str, VSInfo]] = field(default_factory=list)
    allow_any: bool = True


def _egress(sidecar: Entry | None, ns: str) -> tuple[dict[int, tuple], tuple | None]:
    """(port -> patterns, patterns of the listener without port)."""
    if sidecar is None or not sidecar.obj.spec.egress:
        return {}, _ALL
    by_port: dict[int, tuple] = {}
    default: tuple | None = None
    for lst in sidecar.obj.spec.egress:
        pats = tuple(split_ns_host(h, ns) for h in lst.hosts)
        pats = tuple(p for p in pats if p[0] != "~")
        if lst.port is not None and lst.port.number:
            by_port.setdefault(lst.port.number, pats)
        elif default is None:
            default = pats
    return by_port, default


def _covers(pats: tuple | None, svc_ns: str, host: str) -> bool:
    if not pats:
        return False
    for pns, ph in pats:
        if (pns == "*" or pns == svc_ns) and (ph == host or subset_of(host, ph)):
            return True
    return False


def scope_for(cx: Context, namespace: str, sidecar: Entry | None) -> Scope:
    key = (namespace, sidecar.key if sidecar is not None else None)
    return cx.cached(cx.scopes, key, lambda: _build_scope(cx, namespace, sidecar))


def _build_scope(cx: Context, ns: str, sidecar: Entry | None) -> Scope:
    sc = Scope(ns, sidecar)
    by_port, default = _egress(sidecar, ns)
    everything = not by_port and default == _ALL
    chosen: dict[str, tuple[Service, tuple[ServicePort, ...]]] = {}
    for svc in cx.registry.services:
        if not svc.visible_to(ns):
            continue
        ports = tuple(p for p in svc.ports if p.protocol != "UDP")
        if not everything:
            ports = tuple(p for p in ports if _covers(by_port.get(p.port, default), svc.namespace, svc.hostname))
        if not ports:
            continue
        prev = chosen.get(svc.hostname)
        if prev is None or (svc.namespace == ns and prev[0].namespace != ns):
            chosen[svc.hostname] = (svc, ports)  # one service per host: the proxy's namespace first
    sc.services = [chosen[h] for h in sorted(chosen)]
    all_pats = [p for pats in [default, *by_port.values()] if pats for p in pats]

    def vs_visible(v: VSInfo) -> bool:
        if not v.visible(ns):
            return False
        if everything:
            return True
        return any((pns == "*" or pns == v.namespace) and any(overlaps(h, ph) for h in v.hosts)
                   for pns, ph in all_pats)

    sc.virtual_services = [v for v in cx.index.mesh_vs if vs_visible(v)]
    exact: dict[str, VSInfo] = {}
    wild: dict[str, VSInfo] = {}
    for v in sc.virtual_services:
        for h in v.hosts:
            (wild if is_wildcard(h) else exact).setdefault(h, v)
    wild_hosts = sorted(wild, key=len, reverse=True)  # most specific first; stable for ties
    for h in chosen:
        v = exact.get(h)
        if v is None:
            for wh in wild_hosts:
                if subset_of(h, wh):
                    v = wild[wh]
                    break
        if v is not None:
            sc.vs_for_host[h] = v
    for h, v in list(exact.items()) + list(wild.items()):
        if h in chosen:
            continue
        if is_wildcard(h) and any(subset_of(s, h) for s in chosen):
            continue
        sc.other_hosts.append((h, v))
    if sidecar is not None and sidecar.obj.spec.outbound_traffic_policy is not None:
        sc.allow_any = sidecar.obj.spec.outbound_traffic_policy.mode == "ALLOW_ANY"
    return sc


# --------------------------------------------------------------------------- outbound


@dataclass(eq=False)
class Template:
    """A validated outbound configuration shared by proxies with the same key."""

    config: model.ProxyConfig
    cluster_names: list[str]
    route_names: list[str]
    endpoint_names: list[str]


def _dedupe(vhosts: list[model.VirtualHost], seen: set[str]) -> list[model.VirtualHost]:
    """Drop domains already used by an earlier virtual host of the table (domains must be
    unique within a route table; all are lower-case)."""
    out = []
    for vh in vhosts:
        if seen.isdisjoint(vh.domains):
            seen.update(vh.domains)
            out.append(vh)
            continue
        fresh = [d for d in vh.domains if d not in seen]
        if not fresh:
            continue
        seen.update(fresh)
        out.append(model.VirtualHost(name=vh.name, domains=fresh, routes=vh.routes))
    return out


def _catch_all(allow_any: bool) -> model.VirtualHost:
    if allow_any:
        return model.VirtualHost(name="allow_any", domains=["*"], routes=[model.Route(
            name="allow_any", route=model.RouteAction(clusters=[model.WeightedCluster(cluster=PASSTHROUGH)]),
            origin="default")])
    return model.VirtualHost(name="block_all", domains=["*"], routes=[model.Route(
        name="block_all", direct_response=model.DirectResponse(status=502), origin="default")])


def outbound_template(cx: Context, node: model.Node, scope: Scope, selected: frozenset[int],
                      src_key: tuple[int, ...]) -> Template:
    key = (scope.namespace, scope.sidecar.key if scope.sidecar else None, selected, src_key, node.interception)
    return cx.cached(cx.outbound, key, lambda: _build_outbound(cx, node, scope, selected, src_key, key))


def _build_outbound(cx: Context, node: model.Node, scope: Scope, selected: frozenset[int],
                    src_key: tuple[int, ...], key: Any) -> Template:
    ns = scope.namespace
    redirect = node.interception == "REDIRECT"
    groups: list = []
    http_ports: dict[int, list[Service]] = {}
    tcp_ports: list[tuple[Service, ServicePort]] = []
    for svc, ports in scope.services:
        dr = cx.destination_rule(ns, svc, selected)
        for sp in ports:
            groups.append(cx.service_clusters(svc, sp, dr))
            if sp.is_http:
                http_ports.setdefault(sp.port, []).append(svc)
            else:
                tcp_ports.append((svc, sp))
    statics = (BLACKHOLE, PASSTHROUGH, INBOUND_PASSTHROUGH) if redirect else (BLACKHOLE, PASSTHROUGH)
    block = cx.cluster_block(groups, statics)
    names = block.name_set
    known = names.__contains__
    ctx = RouteCtx(SIDECAR_GATEWAYS, ns, node.labels)

    def routes_for(svc_host: str, vs: VSInfo | None, port: int) -> list[model.Route]:
        routes = None
        if vs is not None:
            routes = cx.vs_routes(vs, port, ctx, src_key) or None
        if routes is None:
            routes = cx.default_routes(svc_host, port)
        return cx.resolved(routes, names, key)

    # -- route tables
    tables: dict[int, list[model.VirtualHost]] = {}
    for port in sorted(http_ports):
        vhosts = []
        for svc in http_ports[port]:
            routes = routes_for(svc.hostname, scope.vs_for_host.get(svc.hostname), port)
            vhosts.append(cx.virtual_host(svc, port, ns, routes))
        if port == 80:
            for h, vs in scope.other_hosts:
                routes = cx.vs_routes(vs, port, ctx, src_key)
                if routes:
                    routes = cx.resolved(routes, names, key)
                    vhosts.append(model.VirtualHost(name=f"{h}:{port}", domains=[h, f"{h}:{port}"], routes=routes))
        vhosts.sort(key=lambda v: v.name)
        tables[port] = vhosts
    routes_out: list[model.RouteConfiguration] = []
    listeners: list[model.Listener] = []
    if redirect:
        for port, vhosts in tables.items():
            seen: set[str] = set()
            vhs = _dedupe(vhosts, seen)
            vhs += _dedupe([_catch_all(scope.allow_any)], seen)
            routes_out.append(model.RouteConfiguration(name=str(port), virtual_hosts=vhs))
        listeners.append(_virtual_outbound(cx, scope, tables, tcp_ports, known, ctx))
    else:
        merged: list[model.VirtualHost] = []
        for port, vhosts in tables.items():
            if port == 80:
                merged += vhosts
                continue
            for vh in vhosts:
                doms = [d for d in vh.domains if ":" in d]
                if doms:
                    merged.append(model.VirtualHost(name=vh.name, domains=doms, routes=vh.routes))
        merged.sort(key=lambda v: v.name)
        vhs = _dedupe(merged, set())
        if not scope.allow_any:
            vhs.append(_catch_all(False))
        routes_out.append(model.RouteConfiguration(name="http_proxy", virtual_hosts=vhs))
        listeners.append(model.Listener(
            name="127.0.0.1_15001", address="127.0.0.1", port=15001,
            default_filter_chain=model.FilterChain(name="http_proxy", http=model.HttpConnectionManager(
                route_config="http_proxy", stat_prefix="outbound_127.0.0.1_15001", traffic_direction="OUTBOUND")),
        ))
    routes_out.sort(key=lambda r: r.name)
    return make_template(listeners, routes_out, block)


def make_template(listeners: list[model.Listener], routes: list[model.RouteConfiguration], block: Any) -> Template:
    """A template ProxyConfig. Not validated again here: every reference in it is resolved by
    construction (route destinations go through ``Context.resolved``, chains name tables and
    clusters built alongside), and the tests check complete snapshots with the model's own
    validation. Skipping it keeps a new namespace's first proxy cheap in large meshes."""
    cfg = model.ProxyConfig()
    cfg.listeners = listeners
    cfg.routes = routes
    cfg.clusters = block.clusters
    cfg.endpoints = block.endpoints
    return Template(cfg, block.names, [r.name for r in routes], block.endpoint_names)


def _virtual_outbound(cx: Context, scope: Scope, tables: dict[int, list], tcp_ports: list[tuple[Service, ServicePort]],
                      known, ctx: RouteCtx) -> model.Listener:
    by_ip: list[model.FilterChain] = []
    by_port: dict[int, model.FilterChain] = {}
    for port in tables:
        by_port[port] = model.FilterChain(
            name=f"0.0.0.0_{port}", destination_port=port,
            http=model.HttpConnectionManager(route_config=str(port), stat_prefix=f"outbound_0.0.0.0_{port}",
                                             traffic_direction="OUTBOUND"),
        )
    for svc, sp in tcp_ports:
        target = None
        vs = scope.vs_for_host.get(svc.hostname)
        if vs is not None and vs.tcp:
            target = tcp_destination(vs, sp.port, ctx)
        if target is None:
            target = cluster_name(svc.hostname, sp.port)
        if not known(target):
            target = BLACKHOLE
        if svc.addresses:
            by_ip.append(cx.tcp_chain(svc, sp.port, target))
        elif sp.port not in by_port:
            by_port[sp.port] = cx.tcp_chain(svc, sp.port, target)
    by_ip.sort(key=lambda c: (c.destination_port or 0, c.name or ""))
    chains = by_ip + [by_port[p] for p in sorted(by_port)]
    fallback = PASSTHROUGH if scope.allow_any else BLACKHOLE
    return model.Listener(
        name="virtualOutbound", address="0.0.0.0", port=15001, use_original_dst=True,
        filter_chains=chains,
        default_filter_chain=model.FilterChain(name="PassthroughFilterChain",
                                               tcp=model.TcpProxy(cluster=fallback, stat_prefix=fallback)),
    )
