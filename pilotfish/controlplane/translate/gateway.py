"""A gateway proxy: listeners for the servers of the Gateways that select it.

A Gateway applies to a gateway proxy when its ``selector`` labels are all on the proxy (from
any namespace, Istio's default). Each server becomes (or joins) a listener
``<bind or 0.0.0.0>_<port>``:

- HTTP, HTTP2, GRPC, GRPC-WEB servers share the route table ``http.<port>``. The
  VirtualServices bound to the Gateway (``gateways: [name]`` in the Gateway's namespace,
  ``ns/name`` elsewhere) and exported to the proxy's namespace contribute virtual hosts for
  the intersection of their hosts with the server's hosts (``ns/host`` server hosts only
  admit VirtualServices of that namespace; ``*/`` or no prefix: any; ``./``: the Gateway's).
  The intersection keeps the more specific side: server ``*.example.com`` and VirtualService
  ``a.example.com`` give ``a.example.com``; server ``a.example.com`` and VirtualService ``*``
  give ``a.example.com``. Unlike sidecars, gateways **merge** several VirtualServices for one
  host: their routes are concatenated, oldest VirtualService first. Virtual host domains are
  the host and ``host:port`` (just ``*`` for ``*``). A server with ``tls.httpsRedirect``
  answers every request with a 301 to https.
- HTTPS and TLS servers that terminate TLS need listener TLS, which the proxy does not have
  yet: the security seam (:func:`server_tls_supported`) says no and such servers are left
  out. TLS PASSTHROUGH servers (SNI routing) are left out too.
- TCP (and MONGO, MYSQL, REDIS) servers: a TCP proxy to the first matching ``tcp`` route of
  the first bound VirtualService.

Clusters: every service exported to the gateway's namespace (Sidecar resources do not apply
to gateways), with DestinationRules looked up from the gateway's namespace. Destinations
without port use the service's only port, else the server's port.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilotfish.controlplane.translate.context import (
    BLACKHOLE,
    PASSTHROUGH,
    Context,
)
from pilotfish.controlplane.translate.hosts import split_ns_host, subset_of
from pilotfish.controlplane.translate.index import labels_match
from pilotfish.controlplane.translate.routes import RouteCtx, tcp_destination
from pilotfish.controlplane.translate.sidecar import Template, make_template, scope_for
from pilotfish.proxy import model

__all__ = ["gateway_template", "selected_gateways", "server_tls_supported"]

_HTTP = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
_TCP = frozenset({"TCP", "MONGO", "MYSQL", "REDIS"})


def server_tls_supported(server: Any) -> bool:
    """Security seam: can the proxy terminate this server's TLS? Not yet."""
    return False


def selected_gateways(cx: Context, labels: Mapping[str, str]) -> list:
    return [e for e in cx.index.gateways if labels_match(e.obj.spec.selector, labels)]


def _intersect(vs_hosts: tuple[str, ...], server_host: str) -> list[str]:
    out = []
    for h in vs_hosts:
        if subset_of(h, server_host):
            out.append(h)
        elif subset_of(server_host, h):
            out.append(server_host)
    return out


def gateway_template(cx: Context, node: model.Node, selected: frozenset[int], src_key: tuple[int, ...]) -> Template:
    gws = selected_gateways(cx, node.labels)
    key = ("gateway", node.namespace, tuple(g.key for g in gws), selected, src_key)
    return cx.cached(cx.gateways, key, lambda: _build(cx, node, gws, selected, src_key, key))


def _redirect_route() -> model.Route:
    return model.Route(name="https_redirect", redirect=model.Redirect(scheme="https", response_code=301),
                       origin="default")


def _build(cx: Context, node: model.Node, gws: list, selected: frozenset[int], src_key: tuple[int, ...],
           key: Any) -> Template:
    ns = node.namespace
    scope = scope_for(cx, ns, None)
    groups: list = []
    for svc, ports in scope.services:
        dr = cx.destination_rule(ns, svc, selected)
        for sp in ports:
            groups.append(cx.service_clusters(svc, sp, dr))
    block = cx.cluster_block(groups, (BLACKHOLE, PASSTHROUGH))
    clusters = block.name_set
    known = clusters.__contains__
    # (bind, port) -> ("http", {host: VirtualHost}) | ("tcp", cluster)
    listeners: dict[tuple[str, int], list[Any]] = {}
    tables: dict[int, dict[str, model.VirtualHost]] = {}  # port -> host -> virtual host
    for gw in gws:
        gw_ref = gw.key
        bound = [v for v in cx.index.vs_by_gateway.get(gw_ref, ()) if v.visible(ns)]
        ctx = RouteCtx(frozenset({gw_ref}), ns, node.labels, cx.single_port)
        for server in gw.obj.spec.servers:
            port = server.port.number
            proto = server.port.protocol.upper()
            bind = server.bind or "0.0.0.0"
            terminating = proto in ("HTTPS",) or (proto == "TLS" and server.tls is not None
                                                  and server.tls.mode not in ("PASSTHROUGH", "AUTO_PASSTHROUGH"))
            if terminating and not server_tls_supported(server):
                continue
            kind = "http" if proto in _HTTP or terminating else ("tcp" if proto in _TCP else None)
            if kind is None:
                continue
            slot = listeners.get((bind, port))
            if slot is None:
                slot = listeners[(bind, port)] = [kind, None]
            elif slot[0] != kind:
                continue  # a port serves one protocol; the first server decides
            hosts = [split_ns_host(h, gw.namespace) for h in server.hosts]
            if kind == "tcp":
                if slot[1] is not None:
                    continue
                for vs in bound:
                    if not any(_intersect(vs.hosts, h) for hns, h in hosts if hns in ("*", vs.namespace)):
                        continue
                    target = tcp_destination(vs, port, ctx, cx.single_port)
                    if target is not None:
                        slot[1] = target if known(target) else BLACKHOLE
                        break
                continue
            vhosts = tables.setdefault(port, {})
            redirect = server.tls is not None and server.tls.https_redirect
            for vs in bound:
                matched: list[str] = []
                for hns, h in hosts:
                    if hns in ("*", vs.namespace):
                        for x in _intersect(vs.hosts, h):
                            if x not in matched:
                                matched.append(x)
                if not matched:
                    continue
                routes = cx.vs_routes(vs, port, ctx, src_key, gateway_mode=True)
                routes = cx.resolved(routes, clusters, key) if routes else routes
                for h in matched:
                    vh = vhosts.get(h)
                    if redirect:
                        new_routes = [_redirect_route()]
                    elif vh is not None:
                        new_routes = vh.routes + routes
                    else:
                        new_routes = routes
                    if not new_routes:
                        continue
                    domains = ["*"] if h == "*" else [h, f"{h}:{port}"]
                    vhosts[h] = model.VirtualHost(name=f"{h}:{port}", domains=domains, routes=new_routes)
            if redirect:
                for _, h in hosts:
                    if h not in vhosts:
                        domains = ["*"] if h == "*" else [h, f"{h}:{port}"]
                        vhosts[h] = model.VirtualHost(name=f"{h}:{port}", domains=domains, routes=[_redirect_route()])
    out_listeners = []
    out_routes = []
    for (bind, port), (kind, content) in sorted(listeners.items()):
        name = f"{bind}_{port}"
        if kind == "http":
            seen: set[str] = set()
            vhs = []
            for vh in sorted(tables.get(port, {}).values(), key=lambda v: v.name):
                doms = [d for d in vh.domains if d.lower() not in seen]
                if doms:
                    seen.update(d.lower() for d in doms)
                    vhs.append(vh if len(doms) == len(vh.domains) else
                               model.VirtualHost(name=vh.name, domains=doms, routes=vh.routes))
            rname = f"http.{port}"
            if all(r.name != rname for r in out_routes):
                out_routes.append(model.RouteConfiguration(name=rname, virtual_hosts=vhs))
            chain = model.FilterChain(name=name, http=model.HttpConnectionManager(
                route_config=rname, stat_prefix=f"outbound_{bind}_{port}", use_remote_address=True,
                traffic_direction="OUTBOUND"))
        else:
            if content is None:
                continue
            chain = model.FilterChain(name=name, tcp=model.TcpProxy(cluster=content, stat_prefix=content))
        out_listeners.append(model.Listener(name=name, address=bind, port=port, default_filter_chain=chain))
    out_routes.sort(key=lambda r: r.name)
    return make_template(out_listeners, out_routes, block)
