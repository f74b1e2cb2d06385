"""``pilotfish proxy-status`` and ``pilotfish proxy-config``: what the control plane sent to
each proxy, and whether the proxy took it.

    pilotfish proxy-status
    pilotfish proxy-status productpage-v1-6b746f74dc-9stvs.default
    pilotfish proxy-config routes productpage-v1-6b746f74dc-9stvs.default
    pilotfish proxy-config clusters productpage --fqdn reviews.default.svc.cluster.local
    pilotfish proxy-config all istio-ingressgateway.istio-system -o json

A snapshot is one versioned unit here (not four xDS types), so proxy-status shows one state per
proxy: SYNCED (the proxy acknowledged the version last sent), STALE (sent, not acknowledged
yet, or the proxy is disconnected) or NACKED (the proxy rejected it and kept its previous
configuration; the error is shown).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from pilotfish.cli.client import ApiError, Client, add_client_arguments, fail
from pilotfish.cli.get_cmd import table

SECTIONS = ("listeners", "routes", "clusters", "endpoints", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verb = parser.prog.split()[-1]
    if verb == "proxy-config":
        parser.add_argument("section", choices=SECTIONS, metavar="TYPE",
                            help="listeners, routes, clusters, endpoints or all")
        parser.add_argument("proxy", metavar="POD[.NAMESPACE]", help="the proxy (pod name, pod.namespace or proxy id)")
        parser.add_argument("-o", "--output", choices=["short", "json", "yaml"], default="short",
                            help="output format (default: short, a table)")
        parser.add_argument("--fqdn", help="clusters/endpoints: only this service FQDN (substring)")
        parser.add_argument("--port", type=int, help="only this port")
        parser.add_argument("--subset", help="clusters: only this subset")
        parser.add_argument("--direction", choices=["inbound", "outbound"], help="clusters: only this direction")
        parser.add_argument("--name", help="routes: only this route table; listeners: only this listener")
    else:
        parser.add_argument("proxy", nargs="?", metavar="POD[.NAMESPACE]", help="only this proxy, in detail")
        parser.add_argument("-o", "--output", choices=["short", "json"], default="short", help="output format")
    add_client_arguments(parser)


# --------------------------------------------------------------------------- proxy-status


def _state(row: dict[str, Any]) -> str:
    st = str(row.get("state") or "")
    if not row.get("connected", True):
        return f"{st} (disconnected)" if st else "DISCONNECTED"
    return st


def render_status(rows: list[dict[str, Any]]) -> str:
    head = ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "SENT", "ACKED", "ERROR"]
    out = []
    for r in sorted(rows, key=lambda r: (r["namespace"], r["name"])):
        st = _state(r)
        nack = r.get("nack") or r.get("compute_error")
        err = ""
        if nack:
            err = nack if isinstance(nack, str) else str(nack.get("error") if isinstance(nack, dict) else nack)
            if not r.get("nack"):
                err = "cannot compute: " + err
            err = err.replace("\n", " ")
            if len(err) > 120:
                err = err[:117] + "..."
        out.append([
            f"{r['name']}.{r['namespace']}",
            str(r.get("cluster") or "local"),
            st, st, st, st,
            str(r.get("sent_version") or "-"),
            str(r.get("acked_version") or "-"),
            err,
        ])
    return table(out, head)


def _proxy_status(args: argparse.Namespace, out, err) -> int:
    client = Client.from_args(args)
    try:
        if args.proxy:
            res = client.proxy(args.proxy)
            rows = [res["proxy"]]
        else:
            res = client.proxies()
            rows = res.get("proxies") or []
            if not res.get("discovery", True):
                print("Note: discovery is not running in this control plane.", file=err)
    except ApiError as e:
        return fail(e, err)
    if args.output == "json":
        print(json.dumps(rows, indent=2), file=out)
        return 0
    if not rows:
        print("No proxies are connected to the control plane.", file=err)
        return 0
    out.write(render_status(rows))
    if args.proxy:
        r = rows[0]
        nack = r.get("nack")
        print(file=out)
        print(f"Proxy id:  {r['id']}", file=out)
        print(f"Role:      {r.get('role')}", file=out)
        print(f"Connected: {'yes' if r.get('connected') else 'no'}", file=out)
        if nack:
            text = nack if isinstance(nack, str) else json.dumps(nack)
            print(f"Rejected:  version {r.get('nack_version') or r.get('sent_version')}: {text}", file=out)
            print("The proxy keeps serving its previous configuration (version "
                  f"{r.get('acked_version') or 'none'}).", file=out)
        if r.get("compute_error"):
            print(f"Cannot compute its configuration: {r['compute_error']}", file=out)
    return 0


# --------------------------------------------------------------------------- proxy-config


def _origin_name(origin: str | None, kind: str) -> str:
    """``VirtualService default/reviews bookinfo.yaml:12`` -> ``reviews.default``."""
    if not origin:
        return "-"
    m = re.search(rf"{kind}\S*\s+([\w.-]+)/([\w.-]+)", origin)
    if m:
        return f"{m.group(2)}.{m.group(1)}"
    return "-"  # Istio's defaults, or generated


def _cluster_parts(name: str) -> tuple[str, str, str, str]:
    parts = name.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound"):
        direction, port, subset, host = parts
        return host or "-", port or "-", subset or "-", direction
    return name, "-", "-", "-"


def render_clusters(cfg: dict[str, Any], args: argparse.Namespace | None = None) -> str:
    rows = []
    for c in cfg.get("clusters") or []:
        fqdn, port, subset, direction = _cluster_parts(c["name"])
        if args is not None:
            if args.fqdn and args.fqdn not in fqdn:
                continue
            if args.port and port != str(args.port):
                continue
            if args.subset and subset != args.subset:
                continue
            if args.direction and direction != args.direction:
                continue
        origin = (c.get("metadata") or {}).get("origin")
        rows.append([fqdn, port, subset, direction, c.get("type", "EDS"), _origin_name(origin, "DestinationRule")])
    # as istioctl: by FQDN, port, the service's own cluster before its subsets, direction
    rows.sort(key=lambda r: (r[0], int(r[1]) if r[1].isdigit() else 0, r[2] != "-", r[2], r[3]))
    return table(rows, ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"])


def _chain_match(fc: dict[str, Any]) -> str:
    bits = []
    if fc.get("destination_ips"):
        bits.append("Addr: " + ",".join(fc["destination_ips"]))
    if fc.get("destination_port") is not None:
        bits.append(f"Port: {fc['destination_port']}")
    return "; ".join(bits) or "ALL"


def _chain_dest(fc: dict[str, Any]) -> str:
    if fc.get("http"):
        return f"Route: {fc['http'].get('route_config')}"
    if fc.get("tcp"):
        return f"Cluster: {fc['tcp'].get('cluster')}"
    return "-"


def render_listeners(cfg: dict[str, Any], args: argparse.Namespace | None = None) -> str:
    rows = []
    for lst in cfg.get("listeners") or []:
        if args is not None:
            if args.name and lst.get("name") != args.name:
                continue
            if args.port and lst.get("port") != args.port:
                continue
        addr = lst.get("address", "0.0.0.0")
        port = str(lst.get("port"))
        chains = list(lst.get("filter_chains") or [])
        for fc in chains:
            rows.append([addr, port, _chain_match(fc), _chain_dest(fc)])
        d = lst.get("default_filter_chain")
        if d:
            rows.append([addr, port, "ALL" if not chains else "(default)", _chain_dest(d)])
    return table(rows, ["ADDRESS", "PORT", "MATCH", "DESTINATION"])


def _route_match(r: dict[str, Any]) -> str:
    m = r.get("match") or {}
    uri = m.get("uri")
    if not uri:
        text = "/*"
    elif uri.get("exact") is not None:
        text = uri["exact"]
    elif uri.get("prefix") is not None:
        text = uri["prefix"].rstrip("/") + "/*" if uri["prefix"] not in ("", "/") else "/*"
    elif uri.get("regex") is not None:
        text = uri["regex"]
    elif uri.get("suffix") is not None:
        text = "*" + uri["suffix"]
    else:
        text = "/*"
    extras = []
    for what in ("headers", "query_params", "without_headers"):
        if m.get(what):
            extras.append(f"{what.replace('_', ' ')}: {','.join(m[what])}")
    for what in ("method", "authority", "scheme"):
        if m.get(what):
            extras.append(what)
    if m.get("port") is not None:
        extras.append(f"port {m['port']}")
    if m.get("source_labels"):
        extras.append("source labels")
    return text + (f" ({'; '.join(extras)})" if extras else "")


def render_routes(cfg: dict[str, Any], args: argparse.Namespace | None = None) -> str:
    rows = []
    for rc in cfg.get("routes") or []:
        if args is not None and args.name and rc["name"] != args.name:
            continue
        for vh in rc.get("virtual_hosts") or []:
            doms = list(vh.get("domains") or [])
            dom = ", ".join(doms[:2]) + (f" + {len(doms) - 2} more..." if len(doms) > 2 else "")
            for r in vh.get("routes") or []:
                rows.append([rc["name"], vh["name"], dom, _route_match(r), _origin_name(r.get("origin"), "VirtualService")])
            if not vh.get("routes"):
                rows.append([rc["name"], vh["name"], dom, "-", "-"])
    return table(rows, ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"])


def render_endpoints(cfg: dict[str, Any], args: argparse.Namespace | None = None) -> str:
    rows = []
    for ce in cfg.get("endpoints") or []:
        if args is not None:
            fqdn, port, _, _ = _cluster_parts(ce["cluster"])
            if args.fqdn and args.fqdn not in fqdn:
                continue
        for ep in ce.get("endpoints") or []:
            if args is not None and args.port and ep.get("port") != args.port:
                continue
            rows.append([f"{ep['address']}:{ep['port']}", ep.get("health", "HEALTHY"), "-", ce["cluster"]])
    return table(rows, ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"])


RENDER = {
    "listeners": render_listeners,
    "routes": render_routes,
    "clusters": render_clusters,
    "endpoints": render_endpoints,
}


def _proxy_config(args: argparse.Namespace, out, err) -> int:
    client = Client.from_args(args)
    try:
        res = client.proxy_config(args.proxy)
    except ApiError as e:
        return fail(e, err)
    cfg = res.get("config") or {}
    if args.output in ("json", "yaml"):
        doc = cfg if args.section == "all" else cfg.get(args.section, [])
        if args.output == "json":
            print(json.dumps(doc, indent=2), file=out)
        else:
            import yaml

            out.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        return 0
    sections = ["clusters", "listeners", "routes", "endpoints"] if args.section == "all" else [args.section]
    for i, s in enumerate(sections):
        if i:
            print(file=out)
        out.write(RENDER[s](cfg, args))
    return 0


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if getattr(args, "command", None) == "proxy-config" or hasattr(args, "section"):
        return _proxy_config(args, out, err)
    return _proxy_status(args, out, err)
