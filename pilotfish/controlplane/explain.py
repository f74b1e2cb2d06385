"""``pilotfish explain``: what one proxy would do with one hypothetical request.

:func:`explain` is a pure function of a proxy's snapshot (a
:class:`~pilotfish.proxy.model.ProxyConfig`, normally the last one the control plane sent to
that proxy) and a request (method, URL, headers). It walks the request's path the way the
proxy does -- listener and filter chain, route table, virtual host, routes in order, the
winning route's filters and action, the destination clusters and their endpoints -- using the
proxy's own compiled router (:class:`~pilotfish.proxy.router.RouteTable`), so the answer is
the one the proxy would give, not a re-implementation of it.

The result is a JSON-ready ``dict`` (``pilotfish explain -o json``); :func:`render` turns it
into the human-readable report. Every step says *why* (which domain matched, which condition
of each earlier route failed and what the request had instead) and *who* (the resource, with
``file:line``, that produced the route or the cluster), and the outcome says what the client
would get (``404 NR``, ``503 UH``, an injected ``FI`` abort, a redirect...).
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pilotfish.proxy import model
from pilotfish.proxy.filters import CorsFilter
from pilotfish.proxy.http import Request
from pilotfish.proxy.router import RouteConfigError, RouteTable

__all__ = ["ExplainError", "explain", "parse_headers", "render"]

INBOUND_NAMES = ("virtualinbound", "inbound")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_GATEWAY_SERVICE_PORTS = {80: 8080, 443: 8443}

# Istio's defaults for connection pools are "unlimited" (2^32-1); only show what was set.
_CB_DEFAULTS = model.CircuitBreakers()


class ExplainError(ValueError):
    """The request cannot be explained (a malformed URL or header)."""


# --------------------------------------------------------------------------- inputs


def parse_headers(values: Iterable[str]) -> list[tuple[str, str]]:
    """``["end-user: jason", "x-a:1"]`` (curl's ``-H`` syntax) -> pairs; raises ExplainError."""
    out: list[tuple[str, str]] = []
    for v in values:
        name, sep, value = v.partition(":")
        name = name.strip()
        if not sep or not name or any(c.isspace() for c in name):
            raise ExplainError(f"invalid header {v!r}: expected 'Name: value'")
        out.append((name, value.strip()))
    return out


def _split_url(url: str) -> tuple[str, str, str, int | None]:
    """-> (scheme, authority, target, explicit port or None)."""
    if url.startswith("/"):
        return "http", "", url, None
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ExplainError(f"invalid URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ExplainError(f"invalid URL {url!r}: scheme must be http or https")
    if not parts.hostname:
        raise ExplainError(f"invalid URL {url!r}: no host")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return scheme, parts.netloc.rpartition("@")[2], target, port


def _host_of(authority: str) -> str:
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    host, _, port = authority.rpartition(":")
    return host if host and port.isdigit() else authority


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- formatting


def fmt_duration(seconds: float | str | None) -> str:
    """0.25 -> ``250ms``, 10 -> ``10s``, 90 -> ``1m30s``; None -> ``none``."""
    if seconds is None:
        return "none"
    s = float(model.parse_duration(seconds) or 0.0)
    if s == 0:
        return "0s"
    if s < 1:
        ms = s * 1000
        return f"{ms:g}ms"
    if s < 60 or s != int(s):
        return f"{s:g}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec}s" if sec else f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h{m}m" if m else f"{h}h"


def _sm(sm: model.StringMatch | None) -> str:
    from pilotfish.proxy.filters import describe_string_match

    return describe_string_match(sm)


def _pct(p: float) -> str:
    return f"{p:g}%"


def parse_cluster_name(name: str) -> dict[str, Any] | None:
    """``outbound|9080|v1|reviews.default.svc.cluster.local`` -> its parts, else None."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound"):
        return None
    direction, port, subset, host = parts
    return {
        "direction": direction,
        "port": int(port) if port.isdigit() else port,
        "subset": subset or None,
        "host": host or None,
    }


# --------------------------------------------------------------------------- listener


def _listener_direction(lst: model.Listener) -> str:
    name = lst.name.lower()
    if any(name.startswith(n) for n in INBOUND_NAMES):
        return "inbound"
    chains = list(lst.filter_chains) + ([lst.default_filter_chain] if lst.default_filter_chain else [])
    dirs = {fc.http.traffic_direction for fc in chains if fc.http is not None}
    if dirs == {"INBOUND"}:
        return "inbound"
    return "outbound"


def _chain_info(fc: model.FilterChain, how: str) -> dict[str, Any]:
    info: dict[str, Any] = {"name": fc.name, "match": how}
    if fc.http is not None:
        info["type"] = "http"
        info["route_config"] = fc.http.route_config
        info["traffic_direction"] = fc.http.traffic_direction
    else:
        assert fc.tcp is not None
        info["type"] = "tcp"
        info["cluster"] = fc.tcp.cluster
    return info


def _describe_chain_match(fc: model.FilterChain) -> str:
    bits = []
    if fc.destination_port is not None:
        bits.append(f"destination port {fc.destination_port}")
    if fc.destination_ips:
        bits.append(f"destination addresses {', '.join(fc.destination_ips)}")
    return " and ".join(bits) or "any destination"


def _select_chain(
    lst: model.Listener, ip: str, port: int
) -> tuple[model.FilterChain | None, str, list[str]]:
    """The chain the listener would pick for a connection to (ip, port), why, and notes."""
    notes: list[str] = []
    for fc in lst.filter_chains:
        if fc.destination_port is not None and fc.destination_port != port:
            continue
        if fc.destination_ips:
            if not ip:
                notes.append(
                    f"filter chain {fc.name or '?'} ({_describe_chain_match(fc)}) also needs a "
                    "destination address; the URL names a host, not an address, so it was not "
                    "considered (give the address in the URL to check it)"
                )
                continue
            try:
                addr = ipaddress.ip_address(ip)
                if not any(addr in ipaddress.ip_network(c, strict=False) for c in fc.destination_ips):
                    continue
            except ValueError:
                continue
        return fc, f"matches {_describe_chain_match(fc)}", notes
    if lst.default_filter_chain is not None:
        fc = lst.default_filter_chain
        if not lst.filter_chains:
            return fc, "its only chain", notes
        return fc, f"the default chain: no other chain matches destination port {port}", notes
    return None, f"no filter chain matches destination port {port} and there is no default chain", notes


def _select_listener(
    cfg: model.ProxyConfig, direction: str, ip: str, port: int
) -> dict[str, Any]:
    """Which listener (and chain) receives the request, and why."""
    node = cfg.node
    listeners = cfg.listeners
    wanted = [lst for lst in listeners if _listener_direction(lst) == direction] or list(listeners)
    if node.role == "sidecar" and node.interception == "REDIRECT":
        od = [lst for lst in wanted if lst.use_original_dst]
        if od:
            lst = od[0]
            fc, why, notes = _select_chain(lst, ip, port)
            how = (
                f"the workload's {direction} connections are redirected here by iptables "
                f"(REDIRECT); the filter chain is picked by the original destination port {port}"
            )
            return {"listener": lst, "chain": fc, "why": how, "chain_why": why, "notes": notes}
    bound = [lst for lst in wanted if not lst.use_original_dst and lst.port == port]
    if ip and len(bound) > 1:
        exact = [lst for lst in bound if lst.address == ip]
        bound = exact or bound
    if bound:
        lst = bound[0]
        fc, why, notes = _select_chain(lst, ip, port)
        if node.role == "gateway":
            how = f"the gateway listens on port {lst.port}"
        elif node.interception == "NONE":
            how = (
                "no interception (interception mode NONE): the request is sent to this "
                f"listener, bound on port {lst.port}"
            )
        else:
            how = f"bound on port {lst.port}"
        return {"listener": lst, "chain": fc, "why": how, "chain_why": why, "notes": notes}
    if node.role == "gateway" and port in _GATEWAY_SERVICE_PORTS:
        # Istio's ingress gateway Service maps 80 -> 8080 and 443 -> 8443 (the unprivileged
        # ports the gateway listens on); a URL for the Service's port reaches those.
        target = _GATEWAY_SERVICE_PORTS[port]
        mapped = [lst for lst in wanted if not lst.use_original_dst and lst.port == target]
        if mapped:
            lst = mapped[0]
            fc, why, notes = _select_chain(lst, ip, target)
            how = (
                f"the gateway listens on port {target}: port {port} of Istio's ingress gateway "
                f"Service is its port {target}"
            )
            return {"listener": lst, "chain": fc, "why": how, "chain_why": why, "notes": notes,
                    "port": target}
    if node.interception == "NONE" and node.role == "sidecar":
        # an explicit-proxy listener: one outbound HTTP listener that is not per port
        proxies = [
            lst
            for lst in wanted
            if _listener_direction(lst) == "outbound"
            and (lst.default_filter_chain is not None and lst.default_filter_chain.http is not None)
            and not lst.filter_chains
            and (lst.port == 15001 or any(w in lst.name.lower() for w in ("outbound", "proxy")))
        ]
        if len(proxies) == 1:
            lst = proxies[0]
            fc = lst.default_filter_chain
            how = (
                "no interception (interception mode NONE): the application uses this listener "
                "as its HTTP proxy"
            )
            return {"listener": lst, "chain": fc, "why": how, "chain_why": "its only chain", "notes": []}
        od = [lst for lst in wanted if lst.use_original_dst]
        if od:
            lst = od[0]
            fc, why, notes = _select_chain(lst, ip, port)
            how = f"dispatches on destination port {port}"
            return {"listener": lst, "chain": fc, "why": how, "chain_why": why, "notes": notes}
    ports = sorted({f"{lst.address}:{lst.port} ({lst.name})" for lst in wanted})
    why = f"no {direction} listener of this proxy takes a request to port {port}"
    if ports:
        why += "; its listeners: " + ", ".join(ports)
    return {"listener": None, "chain": None, "why": why, "chain_why": "", "notes": []}


# --------------------------------------------------------------------------- routes


def _noun_for(desc: str) -> str:
    if desc.startswith(("header", "without header")):
        return "header"
    if desc.startswith("query parameter"):
        return "query parameter"
    if desc.startswith("uri"):
        return "path"
    for word in ("method", "scheme", "authority", "port"):
        if desc.startswith(word):
            return word
    return "value"


def humanize_reason(reason: str) -> str:
    """``header 'end-user' exact 'jason': no match for None`` ->
    ``needs header 'end-user' exact 'jason' (the request has no such header)``."""
    desc, sep, had = reason.rpartition(": no match for ")
    if not sep:
        return reason
    noun = _noun_for(desc)
    if had == "None":
        return f"needs {desc} (the request has no such {noun})"
    return f"needs {desc} (the request's {noun} is {had})"


def _route_conditions(r: model.Route) -> list[str]:
    m = r.match
    out = []
    if m.port is not None:
        out.append(f"port {m.port}")
    for what, sm in (("method", m.method), ("scheme", m.scheme), ("authority", m.authority)):
        if sm is not None:
            out.append(f"{what} {_sm(sm)}")
    if m.uri is not None:
        out.append(f"uri {_sm(m.uri)}" + (" (ignore case)" if m.ignore_uri_case else ""))
    for k, sm in m.headers.items():
        out.append(f"header {k!r} {_sm(sm)}")
    for k, sm in m.without_headers.items():
        out.append(f"without header {k!r} {_sm(sm)}")
    for k, sm in m.query_params.items():
        out.append(f"query parameter {k!r} {_sm(sm)}")
    if m.source_labels:
        out.append("source labels " + ", ".join(f"{k}={v}" for k, v in m.source_labels.items()))
    if m.source_namespace:
        out.append(f"source namespace {m.source_namespace}")
    return out


def _header_ops(ops: model.HeaderOps | None) -> dict[str, Any] | None:
    if ops is None or not (ops.set or ops.add or ops.remove):
        return None
    out: dict[str, Any] = {}
    if ops.set:
        out["set"] = dict(ops.set)
    if ops.add:
        out["add"] = dict(ops.add)
    if ops.remove:
        out["remove"] = list(ops.remove)
    return out


def _action(
    r: model.Route, cr: Any, req: Request, cfg: model.ProxyConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The winning route's settings, and its destinations (with their clusters)."""
    info: dict[str, Any] = {"kind": cr.kind}
    dests: list[dict[str, Any]] = []
    if r.fault is not None:
        f: dict[str, Any] = {}
        if r.fault.delay is not None:
            f["delay"] = {
                "fixed_delay": fmt_duration(r.fault.delay.fixed_delay),
                "percentage": r.fault.delay.percentage,
            }
        if r.fault.abort is not None:
            f["abort"] = {"http_status": r.fault.abort.http_status, "percentage": r.fault.abort.percentage}
        info["fault"] = f
    if r.cors is not None:
        c = r.cors
        cors: dict[str, Any] = {
            "allow_origins": [_sm(o) for o in c.allow_origins],
            "allow_methods": list(c.allow_methods),
            "allow_headers": list(c.allow_headers),
            "expose_headers": list(c.expose_headers),
            "max_age": fmt_duration(c.max_age) if c.max_age is not None else None,
            "allow_credentials": c.allow_credentials,
        }
        origin = req.headers.get("origin")
        if origin is not None:
            try:
                allowed = CorsFilter(c).origin_allowed(origin)
            except ValueError:
                allowed = False
            cors["request_origin"] = origin
            cors["origin_allowed"] = allowed
            preflight = req.method == "OPTIONS" and "access-control-request-method" in req.headers
            cors["preflight"] = preflight
        info["cors"] = cors
    rh = _header_ops(r.request_headers)
    if rh:
        info["request_headers"] = rh
    sh = _header_ops(r.response_headers)
    if sh:
        info["response_headers"] = sh
    if cr.kind == "redirect":
        reply = cr.redirect_reply(req)
        info["redirect"] = {
            "status": reply.status,
            "location": dict(reply.headers).get("location"),
        }
        return info, dests
    if cr.kind == "direct":
        assert r.direct_response is not None
        info["direct_response"] = {"status": r.direct_response.status, "body": r.direct_response.body}
        return info, dests
    action = r.route
    assert action is not None
    info["timeout"] = fmt_duration(action.timeout)
    if action.retries is not None:
        rp = action.retries
        info["retries"] = {
            "attempts": rp.attempts,
            "per_try_timeout": fmt_duration(rp.per_try_timeout) if rp.per_try_timeout is not None else None,
            "retry_on": list(rp.retry_on),
            "retriable_status_codes": list(rp.retriable_status_codes),
            "backoff_base_interval": fmt_duration(rp.backoff_base_interval),
        }
    else:
        info["retries"] = None
    if action.mirrors:
        info["mirrors"] = [{"cluster": m.cluster, "percentage": m.percentage} for m in action.mirrors]
    if action.rewrite is not None and cr.has_rewrite:
        copy = Request(req.method, req.target, dict(req.headers), scheme=req.scheme,
                       dest_ip=req.dest_ip, dest_port=req.dest_port)
        cr.rewrite(copy)
        rw: dict[str, Any] = {}
        if action.rewrite.uri is not None or action.rewrite.uri_regex is not None:
            rw["path"] = {"from": req.path, "to": copy.path}
            if action.rewrite.uri_regex is not None:
                rw["uri_regex"] = list(action.rewrite.uri_regex)
            else:
                rw["uri"] = action.rewrite.uri
        if action.rewrite.authority:
            rw["authority"] = {"from": req.authority, "to": copy.authority}
        info["rewrite"] = rw
    live_total = sum(wc.weight for wc in action.clusters if wc.weight > 0)
    clusters = {c.name: c for c in cfg.clusters}
    endpoints = {e.cluster: e.endpoints for e in cfg.endpoints}
    for wc in action.clusters:
        d: dict[str, Any] = {
            "cluster": wc.cluster,
            "weight": wc.weight,
            "percent": round(100.0 * wc.weight / live_total, 2) if live_total and wc.weight > 0 else 0.0,
        }
        rq = _header_ops(wc.request_headers)
        if rq:
            d["request_headers"] = rq
        rs = _header_ops(wc.response_headers)
        if rs:
            d["response_headers"] = rs
        d.update(describe_cluster(clusters.get(wc.cluster), endpoints.get(wc.cluster)))
        dests.append(d)
    return info, dests


def describe_cluster(c: model.Cluster | None, eps: list[model.Endpoint] | None) -> dict[str, Any]:
    """A cluster's settings (only what differs from the defaults) and its endpoints."""
    out: dict[str, Any] = {}
    if c is None:
        out["missing"] = True
        return out
    parsed = parse_cluster_name(c.name)
    if parsed:
        out.update({k: v for k, v in parsed.items()})
    out["type"] = c.type
    out["lb_policy"] = c.lb_policy
    if c.hash_policy is not None:
        hp = c.hash_policy
        if hp.header_name:
            out["hash_on"] = f"header {hp.header_name}"
        elif hp.cookie:
            out["hash_on"] = f"cookie {hp.cookie}" + (f" (ttl {fmt_duration(hp.cookie_ttl)})" if hp.cookie_ttl else "")
        elif hp.query_parameter:
            out["hash_on"] = f"query parameter {hp.query_parameter}"
        elif hp.use_source_ip:
            out["hash_on"] = "source IP"
    out["connect_timeout"] = fmt_duration(c.connect_timeout)
    cb = c.circuit_breakers
    limits = {}
    for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries",
                 "max_requests_per_connection"):
        v = getattr(cb, name)
        if v != getattr(_CB_DEFAULTS, name):
            limits[name] = v
    if cb.idle_timeout != _CB_DEFAULTS.idle_timeout:
        limits["idle_timeout"] = fmt_duration(cb.idle_timeout)
    out["connection_pool"] = limits
    od = c.outlier_detection
    if od is not None:
        out["outlier_detection"] = {
            "consecutive_5xx": od.consecutive_5xx,
            "consecutive_gateway_failure": od.consecutive_gateway_failure,
            "interval": fmt_duration(od.interval),
            "base_ejection_time": fmt_duration(od.base_ejection_time),
            "max_ejection_percent": od.max_ejection_percent,
        }
    else:
        out["outlier_detection"] = None
    if c.tls is not None and c.tls.mode != "DISABLE":
        out["tls"] = {"mode": c.tls.mode, "sni": c.tls.sni}
    origin = c.metadata.get("origin") if isinstance(c.metadata, dict) else None
    if origin:
        out["origin"] = str(origin)
    meta = c.metadata if isinstance(c.metadata, dict) else {}
    subset_labels = meta.get("subset_labels") or meta.get("labels")
    if isinstance(subset_labels, dict):
        out["subset_labels"] = dict(subset_labels)
    rows = []
    for ep in eps or []:
        row: dict[str, Any] = {"address": f"{ep.address}:{ep.port}", "health": ep.health}
        if ep.weight != 1:
            row["weight"] = ep.weight
        if ep.labels:
            row["labels"] = dict(ep.labels)
        if ep.locality:
            row["locality"] = ep.locality
        rows.append(row)
    out["endpoints"] = rows
    out["healthy_endpoints"] = sum(1 for r in rows if r["health"] == "HEALTHY")
    return out


# --------------------------------------------------------------------------- the walk


def explain(
    cfg: model.ProxyConfig,
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    *,
    direction: str | None = None,
    proxy: str | None = None,
) -> dict[str, Any]:
    """Explain what the proxy whose snapshot is ``cfg`` does with ``method url``.

    ``headers``: request headers (``host`` overrides the URL's authority). ``direction``:
    ``outbound`` (a sidecar's application calling out, the default for sidecars) or
    ``inbound`` (a request arriving at the sidecar's workload); gateways ignore it.
    ``proxy``: the proxy's name, for the report. Raises :class:`ExplainError` for a bad
    URL or header.
    """
    method = (method or "GET").upper()
    scheme, url_authority, target, explicit_port = _split_url(url)
    if isinstance(headers, Mapping):
        pairs = list(headers.items())
    else:
        pairs = [parse_headers([h])[0] if isinstance(h, str) else tuple(h) for h in headers]
    hdrs: dict[str, str] = {}
    for k, v in pairs:
        k = k.lower().strip()
        hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
    authority = hdrs.get("host") or url_authority
    if not authority:
        raise ExplainError("the URL has no host and no Host header was given (-H 'Host: ...')")
    hdrs["host"] = authority
    port = explicit_port
    if port is None:
        _, sep, p = url_authority.rpartition(":")
        port = int(p) if sep and p.isdigit() else _DEFAULT_PORTS[scheme]
    host = _host_of(url_authority or authority)
    dest_ip = host if _is_ip(host) else ""
    node = cfg.node
    if direction is None:
        direction = "outbound"
    if direction not in ("outbound", "inbound"):
        raise ExplainError(f"direction must be outbound or inbound, not {direction!r}")
    result: dict[str, Any] = {
        "proxy": {
            "name": proxy or f"{node.name}.{node.namespace}",
            "id": node.id,
            "role": node.role,
            "namespace": node.namespace,
            "labels": dict(node.labels),
            "interception": node.interception,
            "config_version": cfg.version,
        },
        "request": {
            "method": method,
            "url": url,
            "scheme": scheme,
            "authority": authority,
            "path": target.partition("?")[0],
            "query": target.partition("?")[2],
            "port": port,
            "headers": {k: v for k, v in hdrs.items() if k != "host"},
            "direction": direction if node.role != "gateway" else "inbound",
        },
        "notes": [],
        "listener": None,
        "route_table": None,
        "virtual_host": None,
        "routes": [],
        "route": None,
        "destinations": [],
    }
    notes: list[str] = result["notes"]
    if scheme == "https" and node.role == "sidecar" and direction == "outbound":
        notes.append(
            "an https URL means the application speaks TLS itself: the sidecar sees encrypted "
            "bytes and cannot route on the path or headers; shown as if the request were plain HTTP"
        )

    def finish(status: int | None, flag: str | None, summary: str) -> dict[str, Any]:
        result["outcome"] = {"status": status, "flag": flag, "summary": summary}
        return result

    # 1. listener and filter chain
    sel = _select_listener(cfg, "inbound" if node.role == "gateway" else direction, dest_ip, port)
    notes.extend(sel["notes"])
    lst: model.Listener | None = sel["listener"]
    fc: model.FilterChain | None = sel["chain"]
    if lst is None:
        result["listener"] = {"name": None, "why": sel["why"]}
        return finish(None, None, f"not handled by this proxy: {sel['why']} (connection refused)")
    result["listener"] = {
        "name": lst.name,
        "address": f"{lst.address}:{lst.port}",
        "why": sel["why"],
        "chain": _chain_info(fc, sel["chain_why"]) if fc is not None else None,
        "chain_why": sel["chain_why"],
    }
    if fc is None:
        return finish(None, None, f"the connection is closed: {sel['chain_why']}")
    if fc.tcp is not None:
        clusters = {c.name: c for c in cfg.clusters}
        endpoints = {e.cluster: e.endpoints for e in cfg.endpoints}
        d = {"cluster": fc.tcp.cluster, "weight": 100, "percent": 100.0}
        d.update(describe_cluster(clusters.get(fc.tcp.cluster), endpoints.get(fc.tcp.cluster)))
        result["destinations"] = [d]
        return finish(
            None,
            None,
            f"TCP proxy: the connection's bytes go to cluster {fc.tcp.cluster} without HTTP "
            "routing (the port is not an HTTP port, or the destination is not in the mesh)",
        )
    assert fc.http is not None
    if sel.get("port"):
        port = sel["port"]  # the port the gateway's listener really has
    # 2. route table
    rc_name = fc.http.route_config
    result["route_table"] = rc_name
    rc = next((r for r in cfg.routes if r.name == rc_name), None)
    if rc is None:  # ProxyConfig validation makes this impossible, but be safe
        return finish(404, "NR", f"route table {rc_name!r} is not in the snapshot")
    try:
        table = RouteTable(rc, node.labels, node.namespace)
    except RouteConfigError as e:
        return finish(None, None, f"the route table does not compile (the proxy would NACK it): {e}")
    req = Request(method, target, dict(hdrs), scheme=scheme, dest_ip=dest_ip, dest_port=port)
    # 3. virtual host
    vh_name, vh_why = table.explain_virtual_host(authority)
    if vh_name is None:
        domains = [d for vh in rc.virtual_hosts for d in vh.domains]
        close = difflib.get_close_matches(authority.lower(), domains, n=3, cutoff=0.5)
        hint = f"; closest domains: {', '.join(close)}" if close else ""
        result["virtual_host"] = {"name": None, "why": vh_why + hint, "domains_in_table": domains}
        return finish(
            404,
            "NR",
            f"404 NR: no virtual host in route table {rc_name!r} serves authority {authority!r}"
            f"{hint}. Is the host a service this proxy can see (exported to its namespace, "
            "and the port right)?",
        )
    vh = next(v for v in rc.virtual_hosts if v.name == vh_name)
    result["virtual_host"] = {"name": vh_name, "why": vh_why, "domains": list(vh.domains)}
    # 4. routes, in order
    trace = table.match_trace(req)
    winner_index: int | None = None
    rows: list[dict[str, Any]] = []
    for i, (r, (name, matched, reason)) in enumerate(zip(vh.routes, trace, strict=False)):
        row = {
            "index": i,
            "name": name,
            "matched": matched,
            "reason": reason if matched else humanize_reason(reason),
            "conditions": _route_conditions(r),
            "origin": r.origin,
        }
        if winner_index is not None and not matched and not reason.startswith("would match"):
            row["reason"] = f"not tried: {rows[winner_index]['name']} matched first"
        rows.append(row)
        if matched:
            winner_index = i
    result["routes"] = rows
    cr = table.match(req)
    if cr is None or winner_index is None:
        hints = [f"route {row['name']!r} {row['reason']}" for row in rows if row["conditions"]]
        summary = f"404 NR: no route of virtual host {vh_name!r} matches the request"
        if hints:
            summary += ": " + "; ".join(hints[:3])
            if len(hints) > 3:
                summary += f" (and {len(hints) - 3} more routes)"
        if not rows:
            summary = f"404 NR: virtual host {vh_name!r} has no routes"
        return finish(404, "NR", summary)
    r = vh.routes[winner_index]
    action, dests = _action(r, cr, req, cfg)
    result["route"] = {
        "index": winner_index,
        "name": cr.display_name,
        "origin": r.origin,
        **action,
    }
    result["destinations"] = dests
    # 5. outcome
    fault = action.get("fault") or {}
    abort = fault.get("abort")
    delay = fault.get("delay")
    pre = ""
    if delay:
        pre = (
            f"{'every request is' if delay['percentage'] >= 100 else _pct(delay['percentage']) + ' of requests are'}"
            f" delayed {delay['fixed_delay']} (DI); "
        )
    cors = action.get("cors")
    if cors and cors.get("preflight") and cors.get("origin_allowed"):
        return finish(200, None, pre + "CORS preflight from an allowed origin: answered by the proxy (200)")
    if abort and abort["percentage"] >= 100:
        return finish(
            abort["http_status"],
            "FI",
            pre + f"{abort['http_status']} FI: every request is aborted by fault injection "
            f"(route {cr.display_name!r})",
        )
    if cr.kind == "redirect":
        rd = action["redirect"]
        return finish(rd["status"], None, pre + f"{rd['status']} redirect to {rd['location']}")
    if cr.kind == "direct":
        dr = action["direct_response"]
        return finish(dr["status"], None, pre + f"{dr['status']} answered by the proxy (direct response)")
    live = [d for d in dests if d["weight"] > 0]
    parts = []
    for d in live:
        share = f"{_pct(d['percent'])} " if len(live) > 1 else ""
        parts.append(f"{share}{d['cluster']}")
    summary = pre
    if abort:
        summary += f"{_pct(abort['percentage'])} of requests are aborted with {abort['http_status']} (FI); the others are "
    else:
        summary += "the request is "
    summary += "forwarded to " + " or ".join(parts)
    empty = [d for d in live if d.get("type") not in ("ORIGINAL_DST",) and d.get("healthy_endpoints", 0) == 0]
    for d in empty:
        why = "no endpoints" if not d.get("endpoints") else "no healthy endpoints"
        hint = ""
        if d.get("subset"):
            labels = d.get("subset_labels")
            sel = f" ({', '.join(f'{k}={v}' for k, v in labels.items())})" if labels else ""
            hint = f": does any workload of {d.get('host')} have subset {d['subset']}'s labels{sel}?"
        notes.append(f"cluster {d['cluster']} has {why}: 503 UH for the requests sent there{hint}")
    if empty and len(empty) == len(live):
        where = " and ".join(d["cluster"] for d in empty)
        return finish(
            503,
            "UH",
            f"{pre}503 UH (no healthy upstream): the route sends the request to {where}, which "
            f"{'has' if len(empty) == 1 else 'have'} no healthy endpoint",
        )
    return finish(200 if not abort else None, None, summary)


# --------------------------------------------------------------------------- rendering


def _origin_text(origin: str) -> str:
    if origin == "default":
        return "Istio's default route (no VirtualService for this host)"
    return origin


def _kv(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items())


def _ops_text(ops: Mapping[str, Any]) -> str:
    bits = []
    for k, v in (ops.get("set") or {}).items():
        bits.append(f"set {k}: {v}")
    for k, v in (ops.get("add") or {}).items():
        bits.append(f"add {k}: {v}")
    for k in ops.get("remove") or []:
        bits.append(f"remove {k}")
    return "; ".join(bits)


def _cluster_lines(d: Mapping[str, Any], indent: str) -> list[str]:
    out = []
    if d.get("missing"):
        return [f"{indent}(cluster not in the snapshot)"]
    if d.get("origin") == "default":
        out.append(f"{indent}from:              Istio's defaults (no DestinationRule applies)")
    elif d.get("origin"):
        out.append(f"{indent}from:              {d['origin']}")
    lb = d.get("lb_policy", "")
    if d.get("hash_on"):
        lb += f" (hash on {d['hash_on']})"
    out.append(f"{indent}load balancing:    {lb}")
    pool = d.get("connection_pool") or {}
    out.append(f"{indent}connection pool:   {_kv(pool) if pool else 'no limits (defaults)'}")
    od = d.get("outlier_detection")
    if od:
        bits = []
        if od.get("consecutive_5xx") is not None:
            bits.append(f"eject after {od['consecutive_5xx']} consecutive 5xx")
        if od.get("consecutive_gateway_failure") is not None:
            bits.append(f"after {od['consecutive_gateway_failure']} consecutive gateway errors")
        bits.append(f"every {od['interval']}, for {od['base_ejection_time']}, at most {od['max_ejection_percent']}%")
        out.append(f"{indent}outlier detection: {', '.join(bits)}")
    else:
        out.append(f"{indent}outlier detection: off")
    if d.get("tls"):
        out.append(f"{indent}upstream TLS:      {d['tls']['mode']}" + (f" (sni {d['tls']['sni']})" if d["tls"].get("sni") else ""))
    out.append(f"{indent}connect timeout:   {d.get('connect_timeout')}")
    eps = d.get("endpoints") or []
    if d.get("type") == "ORIGINAL_DST":
        out.append(f"{indent}endpoints:         the connection's original destination")
    elif not eps:
        out.append(f"{indent}endpoints:         NONE (requests sent here fail with 503 UH)")
    else:
        out.append(f"{indent}endpoints:         {d.get('healthy_endpoints', 0)} healthy of {len(eps)}")
        for ep in eps[:20]:
            extra = []
            if ep.get("labels"):
                extra.append(",".join(f"{k}={v}" for k, v in ep["labels"].items()))
            if ep.get("locality"):
                extra.append(f"locality {ep['locality']}")
            if ep.get("weight"):
                extra.append(f"weight {ep['weight']}")
            out.append(f"{indent}  {ep['address']:<22} {ep['health']:<9} {'  '.join(extra)}".rstrip())
        if len(eps) > 20:
            out.append(f"{indent}  ... and {len(eps) - 20} more")
    return out


def render(result: Mapping[str, Any]) -> str:
    """The human-readable report of an :func:`explain` result."""
    lines: list[str] = []
    px = result["proxy"]
    rq = result["request"]
    add = lines.append
    add(f"Request:  {rq['method']} {rq['url']}")
    extra = f"authority {rq['authority']}, path {rq['path']}"
    if rq.get("query"):
        extra += f", query {rq['query']}"
    for k, v in (rq.get("headers") or {}).items():
        extra += f", {k}: {v}"
    add(f"          ({extra})")
    role = px["role"]
    how = f"{role}, interception {px['interception']}" if role == "sidecar" else role
    add(f"Proxy:    {px['name']} ({how}), config version {px['config_version']}")
    if role != "gateway":
        add(f"          {rq['direction']} request")
    add("")
    li = result.get("listener") or {}
    add("Listener")
    if not li.get("name"):
        add(f"  {li.get('why', 'none')}")
    else:
        add(f"  {li['name']} ({li['address']}): {li['why']}")
        ch = li.get("chain")
        if ch:
            dest = f"route table {ch['route_config']!r}" if ch["type"] == "http" else f"TCP proxy to {ch['cluster']}"
            add(f"  chain {ch.get('name') or '(unnamed)'}: {li.get('chain_why')} -> {dest}")
        elif li.get("chain_why"):
            add(f"  {li['chain_why']}")
    vh = result.get("virtual_host")
    if result.get("route_table") is not None:
        add("")
        add(f"Route table {result['route_table']!r}")
        if vh is not None:
            if vh.get("name"):
                add(f"  virtual host {vh['name']!r}: {vh['why']}")
            else:
                add(f"  no virtual host: {vh['why']}")
                doms = vh.get("domains_in_table") or []
                if doms:
                    shown = ", ".join(doms[:12]) + (f" (+{len(doms) - 12} more)" if len(doms) > 12 else "")
                    add(f"  domains in this table: {shown}")
    routes = result.get("routes") or []
    if routes:
        add("")
        add("Routes (in order; the first match wins)")
        for row in routes:
            mark = "=>" if row["matched"] else "  "
            add(f"  {mark} {row['index']}. {row['name']}: {row['reason']}")
            if row.get("origin"):
                add(f"        from {_origin_text(row['origin'])}")
    rt = result.get("route")
    if rt:
        add("")
        add(f"Route {rt['name']!r}" + (f"  (from {_origin_text(rt['origin'])})" if rt.get("origin") else ""))
        if rt.get("fault"):
            f = rt["fault"]
            if f.get("delay"):
                add(f"  fault delay:      {f['delay']['fixed_delay']} for {_pct(f['delay']['percentage'])} of requests (DI)")
            if f.get("abort"):
                add(f"  fault abort:      {f['abort']['http_status']} for {_pct(f['abort']['percentage'])} of requests (FI)")
        if rt.get("cors"):
            c = rt["cors"]
            add(f"  CORS:             origins {', '.join(c['allow_origins']) or 'none'}; "
                f"methods {', '.join(c['allow_methods']) or '-'}; headers {', '.join(c['allow_headers']) or '-'}"
                + (f"; max age {c['max_age']}" if c.get("max_age") else "")
                + ("; credentials allowed" if c.get("allow_credentials") else ""))
            if "request_origin" in c:
                add(f"                    origin {c['request_origin']!r} is {'allowed' if c['origin_allowed'] else 'NOT allowed'}"
                    + (" (preflight)" if c.get("preflight") else ""))
        if rt.get("request_headers"):
            add(f"  request headers:  {_ops_text(rt['request_headers'])}")
        if rt.get("response_headers"):
            add(f"  response headers: {_ops_text(rt['response_headers'])}")
        if rt["kind"] == "redirect":
            add(f"  redirect:         {rt['redirect']['status']} to {rt['redirect']['location']}")
        elif rt["kind"] == "direct":
            body = rt["direct_response"].get("body")
            add(f"  direct response:  {rt['direct_response']['status']}" + (f" {body!r}" if body else ""))
        else:
            add(f"  timeout:          {rt.get('timeout')}")
            rp = rt.get("retries")
            if rp:
                per = f", per try timeout {rp['per_try_timeout']}" if rp.get("per_try_timeout") else ""
                codes = f" (status codes {', '.join(map(str, rp['retriable_status_codes']))})" if rp.get("retriable_status_codes") else ""
                add(f"  retries:          {rp['attempts']} attempts{per}, on {','.join(rp['retry_on']) or '-'}{codes}")
            else:
                add("  retries:          none")
            if rt.get("rewrite"):
                rw = rt["rewrite"]
                if rw.get("path"):
                    add(f"  rewrite:          path {rw['path']['from']} -> {rw['path']['to']}")
                if rw.get("authority"):
                    add(f"  rewrite:          authority {rw['authority']['from']} -> {rw['authority']['to']}")
            for m in rt.get("mirrors") or []:
                add(f"  mirror:           {_pct(m['percentage'])} of requests also to {m['cluster']} (responses ignored)")
    dests = result.get("destinations") or []
    if dests:
        add("")
        add("Destinations")
        for d in dests:
            bits = []
            if d.get("subset"):
                bits.append(f"subset {d['subset']}")
            if d.get("subset_labels"):
                bits.append(",".join(f"{k}={v}" for k, v in d["subset_labels"].items()))
            share = f"{_pct(d['percent'])}".rjust(6) + f" (weight {d['weight']})"
            add(f"  {share}  {d['cluster']}" + (f"  [{'; '.join(bits)}]" if bits else ""))
            if d.get("request_headers"):
                add(f"          request headers:  {_ops_text(d['request_headers'])}")
            if d.get("response_headers"):
                add(f"          response headers: {_ops_text(d['response_headers'])}")
            lines.extend(_cluster_lines(d, "          "))
    notes = result.get("notes") or []
    if notes:
        add("")
        add("Notes")
        for n in notes:
            add(f"  - {n}")
    oc = result.get("outcome") or {}
    add("")
    add(f"Result: {oc.get('summary', '')}")
    return "\n".join(lines) + "\n"
