"""VirtualService HTTP routes -> proxy Routes (Istio's ``BuildHTTPRoutesForVirtualService``).

- One proxy Route per ``HTTPMatchRequest`` (a rule with three matches becomes three routes with
  the same action); a rule without ``match`` matches everything. Routes keep the
  VirtualService's order (first match wins) and translation stops after a route that matches
  everything, as Istio does.
- Matches that cannot apply to this proxy are dropped when the configuration is generated:
  ``port`` other than the listener's, ``gateways`` not naming this proxy (``mesh`` for
  sidecars), ``sourceLabels`` the proxy does not carry, ``sourceNamespace`` other than its
  own. (When ``gateways`` is set on a match, only it is checked, like Istio.)
- Destinations: ``outbound|<port>|<subset>|<host>``; without ``port`` a sidecar uses the port
  the request arrived on (Istio), a gateway the destination's only port, else the listener
  port. One destination takes all the traffic; several share it by relative ``weight``, and
  weight-0 destinations are left out.
- ``timeout``: none unless set (Istio disables Envoy's 15s default). ``retries``: absent,
  Istio's default policy (2 attempts on ``connect-failure,refused-stream,unavailable,
  cancelled,retriable-status-codes``, status 503); ``attempts: 0`` disables retries; numeric
  entries of ``retryOn`` are status codes (and imply ``retriable-status-codes``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pilotfish.api import defaults
from pilotfish.api.types import networking as net
from pilotfish.controlplane.translate.index import MESH, VSInfo, labels_match
from pilotfish.controlplane.translate.policy import duration
from pilotfish.controlplane.view import Entry
from pilotfish.proxy import model

__all__ = [
    "RouteCtx",
    "cluster_name",
    "default_retry_policy",
    "retry_policy",
    "routes_for_vs",
    "default_route",
    "route_clusters",
]


def cluster_name(host: str, port: int, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host}"


@dataclass(frozen=True, slots=True)
class RouteCtx:
    """Who the routes are for."""

    gateways: frozenset[str]  # {"mesh"} for sidecars, {"ns/name"} for a gateway server
    namespace: str
    labels: Mapping[str, str]
    #: host -> its only port (gateways infer a destination's port from it); None on sidecars
    single_port: Callable[[str], int | None] | None = None


# --------------------------------------------------------------------------- retries


def default_retry_policy() -> model.RetryPolicy:
    """Istio's default retry policy for HTTP routes without ``retries``."""
    return model.RetryPolicy(
        attempts=defaults.DEFAULT_RETRY_ATTEMPTS,
        retry_on=defaults.DEFAULT_RETRY_ON.split(","),
        retriable_status_codes=list(defaults.DEFAULT_RETRIABLE_STATUS_CODES),
    )


_DEFAULT_RETRY = default_retry_policy()


def retry_policy(r: net.HTTPRetry | None) -> model.RetryPolicy | None:
    if r is None:
        return _DEFAULT_RETRY
    if r.attempts <= 0:
        return None
    kw: dict[str, Any] = {"attempts": r.attempts}
    if r.retry_on:
        conds, codes = [], []
        for part in r.retry_on.split(","):
            part = part.strip()
            if not part:
                continue
            if part.isdigit() and 100 <= int(part) <= 599:
                codes.append(int(part))
            else:
                conds.append(part)
        if codes and "retriable-status-codes" not in conds:
            conds.append("retriable-status-codes")
        kw["retry_on"] = conds
        kw["retriable_status_codes"] = codes
    else:
        kw["retry_on"] = list(_DEFAULT_RETRY.retry_on)
        kw["retriable_status_codes"] = list(_DEFAULT_RETRY.retriable_status_codes)
    pt = duration(r.per_try_timeout)
    if pt is not None:
        kw["per_try_timeout"] = pt
    if r.retry_remote_localities:
        kw["retry_remote_localities"] = True
    b = duration(r.backoff)
    if b is not None:
        kw["backoff_base_interval"] = b
    return model.RetryPolicy(**kw)


# --------------------------------------------------------------------------- matches


def _sm(m: net.StringMatch | None) -> model.StringMatch | None:
    if m is None:
        return None
    if m.exact is not None:
        return model.StringMatch(exact=m.exact)
    if m.prefix is not None:
        return model.StringMatch(prefix=m.prefix)
    if m.regex is not None and m.regex != "*":  # Istio reads regex "*" as "present"
        return model.StringMatch(regex=m.regex)
    return model.StringMatch()


def _sm_map(d: Mapping[str, net.StringMatch]) -> dict[str, model.StringMatch]:
    return {k: _sm(v) for k, v in sorted(d.items())}  # type: ignore[misc]


def translate_match(m: net.HTTPMatchRequest | None) -> model.RouteMatch:
    if m is None:
        return model.RouteMatch()
    uri = _sm(m.uri)
    if uri is not None and uri.prefix == "/":
        uri = None
    return model.RouteMatch(
        uri=uri,
        scheme=_sm(m.scheme),
        method=_sm(m.method),
        authority=_sm(m.authority),
        headers=_sm_map(m.headers),
        without_headers=_sm_map(m.without_headers),
        query_params=_sm_map(m.query_params),
        ignore_uri_case=m.ignore_uri_case,
    )


def is_catch_all(rm: model.RouteMatch) -> bool:
    u = rm.uri
    path_all = u is None or u.prefix == "/" or u.regex == ".*"
    return (path_all and not rm.headers and not rm.without_headers and not rm.query_params
            and rm.method is None and rm.authority is None and rm.scheme is None)


def source_match(m: net.HTTPMatchRequest | Any | None, ctx: RouteCtx) -> bool:
    if m is None:
        return True
    if m.gateways:
        return any(g in ctx.gateways for g in m.gateways)
    if m.source_labels and not labels_match(m.source_labels, ctx.labels):
        return False
    return not m.source_namespace or m.source_namespace == ctx.namespace


# --------------------------------------------------------------------------- actions


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def _is_authority(name: str) -> bool:
    return name.lower() in (":authority", "host")


def _header_ops(ops: net.HeaderOperations | None) -> tuple[model.HeaderOps | None, str | None]:
    """(HeaderOps without pseudo-headers, the authority set through ``host``/``:authority``)."""
    if ops is None:
        return None, None
    authority = None
    for k, v in ops.add.items():
        if _is_authority(k):
            authority = v
    for k, v in ops.set.items():
        if _is_authority(k):
            authority = v
    s = {k: v for k, v in sorted(ops.set.items()) if not _is_internal_header(k)}
    a = {k: v for k, v in sorted(ops.add.items()) if not _is_internal_header(k)}
    r = [k for k in ops.remove if not _is_internal_header(k)]
    if not (s or a or r):
        return None, authority
    return model.HeaderOps(set=s, add=a, remove=r), authority


def _merge_ops(a: model.HeaderOps | None, b: model.HeaderOps | None) -> model.HeaderOps | None:
    if a is None:
        return b
    if b is None:
        return a
    return model.HeaderOps(set={**a.set, **b.set}, add={**a.add, **b.add},
                           remove=list(dict.fromkeys(a.remove + b.remove)))


def _percent(p: net.Percent | None, legacy: int | None, default: float) -> float:
    if p is not None:
        return max(0.0, min(100.0, p.value))
    if legacy is not None:
        return max(0.0, min(100.0, float(legacy)))
    return default


def _fault(f: net.HTTPFaultInjection | None) -> model.Fault | None:
    if f is None:
        return None
    delay = abort = None
    if f.delay is not None and f.delay.fixed_delay:  # exponentialDelay: not supported (Istio too)
        # No percentage (nor the deprecated integer percent): 0%, as Istio configures it.
        delay = model.FaultDelay(fixed_delay=duration(f.delay.fixed_delay) or 0.0,
                                 percentage=_percent(f.delay.percentage, f.delay.percent, 0.0))
    if f.abort is not None and f.abort.http_status is not None and 200 <= f.abort.http_status <= 599:
        abort = model.FaultAbort(http_status=f.abort.http_status,
                                 percentage=_percent(f.abort.percentage, None, 0.0))
    if delay is None and abort is None:
        return None
    return model.Fault(delay=delay, abort=abort)


def _cors(c: net.CorsPolicy | None) -> model.CorsPolicy | None:
    if c is None:
        return None
    if c.allow_origins:
        origins = [_sm(o) for o in c.allow_origins]
    else:
        origins = [model.StringMatch(exact=o) for o in c.allow_origin]
    max_age = duration(c.max_age)
    return model.CorsPolicy(
        allow_origins=origins,  # type: ignore[arg-type]
        allow_methods=list(c.allow_methods),
        allow_headers=list(c.allow_headers),
        expose_headers=list(c.expose_headers),
        max_age=float(int(max_age)) if max_age is not None else None,  # Istio: whole seconds
        allow_credentials=c.allow_credentials,
        unmatched_preflights="IGNORE" if c.unmatched_preflights == "IGNORE" else "FORWARD",
    )


def _redirect(r: net.HTTPRedirect, listen_port: int) -> model.Redirect | None:
    code = r.redirect_code or defaults.DEFAULT_REDIRECT_CODE
    if code not in (301, 302, 303, 307, 308):
        return None  # Istio leaves such a route without action
    port = None
    if r.port is not None:
        port = r.port
    elif r.derive_port == "FROM_REQUEST_PORT":
        port = listen_port
    scheme = r.scheme or None
    if port is not None:
        eff = scheme or "http"
        if (port == 80 and eff == "http") or (port == 443 and eff == "https"):
            port = None
    return model.Redirect(uri=r.uri or None, authority=r.authority or None, port=port or None,
                          scheme=scheme, response_code=code)


def _direct(d: net.HTTPDirectResponse) -> model.DirectResponse | None:
    if not 100 <= d.status <= 599:
        return None
    body = None
    if d.body is not None:
        if d.body.string is not None:
            body = d.body.string
        elif d.body.bytes is not None:
            try:
                body = base64.b64decode(d.body.bytes).decode("utf-8", "replace")
            except ValueError:
                body = None
    return model.DirectResponse(status=d.status, body=body)


def _dest_port(d: net.Destination, listen_port: int, ctx: RouteCtx) -> int:
    if d.port is not None and d.port.number:
        return d.port.number
    if ctx.single_port is not None:
        p = ctx.single_port(d.host)
        if p:
            return p
    return listen_port


def _dest_cluster(d: net.Destination, listen_port: int, ctx: RouteCtx) -> str:
    return cluster_name(d.host, _dest_port(d, listen_port, ctx), d.subset)


def _action(http: net.HTTPRoute, listen_port: int, ctx: RouteCtx, authority: str | None,
            req_ops: model.HeaderOps | None, resp_ops: model.HeaderOps | None):
    """(RouteAction, route-level request ops, route-level response ops) or None."""
    dests = list(http.route)
    if not dests:
        return None
    clusters: list[model.WeightedCluster] = []
    if len(dests) == 1:
        d = dests[0]
        dreq = dresp = None
        if d.headers is not None:
            dreq, dauth = _header_ops(d.headers.request)
            dresp, _ = _header_ops(d.headers.response)
            if dauth and authority is None and not (http.rewrite and http.rewrite.authority):
                authority = dauth
        req_ops = _merge_ops(req_ops, dreq)
        resp_ops = _merge_ops(resp_ops, dresp)
        clusters.append(model.WeightedCluster(cluster=_dest_cluster(d.destination, listen_port, ctx), weight=100))
    else:
        kept = [d for d in dests if d.weight > 0] or dests  # all zero: share equally
        for d in kept:
            dreq = dresp = None
            if d.headers is not None:
                dreq, _ = _header_ops(d.headers.request)
                dresp, _ = _header_ops(d.headers.response)
            clusters.append(model.WeightedCluster(
                cluster=_dest_cluster(d.destination, listen_port, ctx),
                weight=d.weight if d.weight > 0 else 1,
                request_headers=dreq, response_headers=dresp,
            ))
    rewrite = None
    if http.rewrite is not None or authority:
        rw = http.rewrite
        uri = rw.uri if rw is not None and rw.uri else None
        regex = None
        if rw is not None and rw.uri_regex_rewrite is not None and rw.uri_regex_rewrite.match:
            regex = (rw.uri_regex_rewrite.match, rw.uri_regex_rewrite.rewrite)
            uri = None
        auth = rw.authority if rw is not None and rw.authority else authority
        if uri or regex or auth:
            rewrite = model.Rewrite(uri=uri, uri_regex=regex, authority=auth)
    mirrors: list[model.Mirror] = []
    if http.mirror is not None:
        legacy = http.mirror_percent if http.mirror_percent is not None else http.mirror_percent_legacy
        pct = _percent(http.mirror_percentage, legacy, 100.0)
        if pct > 0:
            mirrors.append(model.Mirror(cluster=_dest_cluster(http.mirror, listen_port, ctx), percentage=pct))
    for m in http.mirrors:
        pct = _percent(m.percentage, None, 100.0)
        if pct > 0:
            mirrors.append(model.Mirror(cluster=_dest_cluster(m.destination, listen_port, ctx), percentage=pct))
    timeout = duration(http.timeout)
    action = model.RouteAction(
        clusters=clusters,
        timeout=timeout or None,  # "0s" disables the timeout
        retries=retry_policy(http.retries),
        mirrors=mirrors,
        rewrite=rewrite,
    )
    return action, req_ops, resp_ops


def translate_route(http: net.HTTPRoute, match: net.HTTPMatchRequest | None, listen_port: int,
                    ctx: RouteCtx, origin: str) -> model.Route | None:
    if match is not None and match.port and match.port != listen_port:
        return None
    if not source_match(match, ctx):
        return None
    name = http.name
    if match is not None and match.name:
        name = f"{name}.{match.name}"
    req_ops = resp_ops = None
    authority = None
    if http.headers is not None:
        req_ops, authority = _header_ops(http.headers.request)
        resp_ops, _ = _header_ops(http.headers.response)
    kw: dict[str, Any] = {}
    if http.redirect is not None:
        red = _redirect(http.redirect, listen_port)
        if red is None:
            return None
        kw["redirect"] = red
    elif http.direct_response is not None:
        dr = _direct(http.direct_response)
        if dr is None:
            return None
        kw["direct_response"] = dr
    else:
        got = _action(http, listen_port, ctx, authority, req_ops, resp_ops)
        if got is None:
            return None
        kw["route"], req_ops, resp_ops = got
    return model.Route(
        name=name or None,
        match=translate_match(match),
        request_headers=req_ops,
        response_headers=resp_ops,
        fault=_fault(http.fault),
        cors=_cors(http.cors_policy),
        origin=origin,
        **kw,
    )


def routes_for_vs(vs: VSInfo, listen_port: int, ctx: RouteCtx) -> list[model.Route]:
    """The routes of a VirtualService for one listener port and one proxy context."""
    out: list[model.Route] = []
    origins: dict[int, str] = {}

    def origin_of(e: Entry) -> str:
        o = origins.get(id(e))
        if o is None:
            o = e.origin if e is vs.entry else f"{e.origin} (delegate of {vs.entry.origin})"
            origins[id(e)] = o
        return o

    for http, e in vs.http:
        catch_all = False
        if not http.match:
            r = translate_route(http, None, listen_port, ctx, origin_of(e))
            if r is not None:
                out.append(r)
            catch_all = True
        else:
            for m in http.match:
                r = translate_route(http, m, listen_port, ctx, origin_of(e))
                if r is not None:
                    out.append(r)
                    if is_catch_all(r.match):
                        catch_all = True
                        break
        if catch_all:
            break
    return out


def default_route(cluster: str) -> model.Route:
    """The route of a service without VirtualService: everything to its default cluster,
    with Istio's default retry policy and no timeout."""
    return model.Route(
        name="default",
        match=model.RouteMatch(),
        route=model.RouteAction(clusters=[model.WeightedCluster(cluster=cluster, weight=100)],
                                retries=_DEFAULT_RETRY),
        origin="default",
    )


def route_clusters(r: model.Route) -> list[str]:
    if r.route is None:
        return []
    return [w.cluster for w in r.route.clusters] + [m.cluster for m in r.route.mirrors]


def tcp_destination(vs: VSInfo, port: int, ctx: RouteCtx, single_port: Callable[[str], int | None] | None = None
                    ) -> str | None:
    """The cluster a VirtualService's ``tcp`` routes send a connection on ``port`` to: the
    first rule whose match applies, and its heaviest destination (the proxy's TCP proxy has a
    single upstream cluster; weighted TCP splits are not supported)."""
    for r in vs.tcp:
        ok = not r.match
        for m in r.match:
            if m.port and m.port != port:
                continue
            if m.destination_subnets:
                continue  # destination subnet matches: not supported
            if m.gateways:
                if any(g in ctx.gateways for g in m.gateways):
                    ok = True
                    break
                continue
            if m.source_labels and not labels_match(m.source_labels, ctx.labels):
                continue
            if m.source_namespace and m.source_namespace != ctx.namespace:
                continue
            ok = True
            break
        if not ok or not r.route:
            continue
        best = max(r.route, key=lambda d: d.weight) if len(r.route) > 1 else r.route[0]
        d = best.destination
        p = d.port.number if d.port is not None and d.port.number else (
            (single_port(d.host) if single_port else None) or port)
        return cluster_name(d.host, p, d.subset)
    return None


SIDECAR_GATEWAYS = frozenset({MESH})
