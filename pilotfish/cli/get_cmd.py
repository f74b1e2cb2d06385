"""``pilotfish get``: list configuration objects the way kubectl does.

    pilotfish get vs                      # VirtualServices in the default namespace
    pilotfish get svc -A -o wide
    pilotfish get dr reviews -o yaml
    pilotfish get vs,dr,gw -n bookinfo

Columns follow ``kubectl get`` and Istio's CRD printer columns (VirtualService: GATEWAYS,
HOSTS; DestinationRule: HOST; ServiceEntry: HOSTS, LOCATION, RESOLUTION...). ``-o wide`` adds
a few more, and SOURCE: the file and line the object was applied from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from typing import Any

from pilotfish.cli.client import ApiError, Client, add_client_arguments, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", metavar="KIND", help="kind(s), comma-separated: vs, dr, gw, se, svc, deploy, po, ...")
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these objects")
    parser.add_argument("-n", "--namespace", help="namespace (default: default)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    parser.add_argument("-o", "--output", choices=["wide", "yaml", "json", "name"], help="output format")
    parser.add_argument("--no-headers", action="store_true", help="do not print the header line")
    add_client_arguments(parser)


# --------------------------------------------------------------------------- formatting


def age(created: str | None, now: dt.datetime | None = None) -> str:
    """kubectl's AGE: 45s, 12m, 5h, 3d (and 2m30s, 3h5m under ten of the larger unit)."""
    if not created:
        return "<unknown>"
    try:
        t = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return "<unknown>"
    now = now or dt.datetime.now(dt.UTC)
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def table(rows: list[list[str]], headers: list[str] | None) -> str:
    """Columns separated by three spaces, as kubectl's tabwriter prints them."""
    allrows = ([headers] if headers else []) + rows
    if not allrows:
        return ""
    widths = [max(len(r[i]) for r in allrows) for i in range(len(allrows[0]))]
    lines = []
    for r in allrows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _join(items: list[Any], empty: str = "") -> str:
    return ",".join(str(i) for i in items) if items else empty


def _json_list(items: list[Any]) -> str:
    return json.dumps([str(i) for i in items], separators=(",", ":")) if items else ""


def _ports(spec: dict[str, Any]) -> str:
    out = []
    for p in _l(spec.get("ports")):
        p = _d(p)
        s = str(p.get("port", ""))
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        s += "/" + str(p.get("protocol") or "TCP")
        out.append(s)
    return ",".join(out) or "<none>"


def _selector(sel: Any) -> str:
    d = _d(sel)
    if "matchLabels" in d:
        d = _d(d.get("matchLabels"))
    return ",".join(f"{k}={v}" for k, v in d.items()) or "<none>"


Column = tuple[str, Callable[[dict[str, Any]], str], bool]  # (header, getter, wide only)
#: where AGE goes when a kind's columns place it (kubectl puts it before IP for pods); other
#: kinds get it after their columns
AGE_COLUMN: Column = ("AGE", lambda o: "", False)


def _int(x: Any) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) else 0


def _container_statuses(o: dict[str, Any]) -> list[dict[str, Any]]:
    return [_d(c) for c in _l(_d(o.get("status")).get("containerStatuses"))]


def _pod_ready(o: dict[str, Any]) -> str:
    total = len(_l(_spec(o).get("containers")))
    ready = sum(1 for c in _container_statuses(o) if c.get("ready") is True)
    return f"{ready}/{total}"


def pod_status_reason(o: dict[str, Any]) -> str:
    """kubectl's STATUS column: Terminating, a container's waiting or terminated reason
    (CrashLoopBackOff, ContainerCreating, Error...), else the phase."""
    md = _d(o.get("metadata"))
    status = _d(o.get("status"))
    if md.get("deletionTimestamp"):
        return "Terminating"
    reason = str(status.get("reason") or status.get("phase") or "Pending")
    for c in _container_statuses(o):
        state = _d(c.get("state"))
        waiting = _d(state.get("waiting"))
        terminated = _d(state.get("terminated"))
        if waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated:
            reason = str(terminated.get("reason") or (
                f"Signal:{terminated['signal']}" if terminated.get("signal") else
                f"ExitCode:{terminated.get('exitCode', '?')}"))
    return reason


def _pod_restarts(o: dict[str, Any], now: dt.datetime | None = None) -> str:
    total = sum(_int(c.get("restartCount")) for c in _container_statuses(o))
    last = ""
    for c in _container_statuses(o):
        fin = _d(_d(c.get("lastState")).get("terminated")).get("finishedAt")
        if isinstance(fin, str) and fin > last:
            last = fin
    if total and last:
        return f"{total} ({age(last, now)} ago)"
    return str(total)


def _spec(o: dict[str, Any]) -> dict[str, Any]:
    return _d(o.get("spec"))


def _pod_template(o: dict[str, Any]) -> dict[str, Any]:
    return _d(_d(_spec(o).get("template")).get("spec"))


COLUMNS: dict[str, list[Column]] = {
    "VirtualService": [
        ("GATEWAYS", lambda o: _json_list(_l(_spec(o).get("gateways"))), False),
        ("HOSTS", lambda o: _json_list(_l(_spec(o).get("hosts"))), False),
    ],
    "DestinationRule": [
        ("HOST", lambda o: str(_spec(o).get("host", "")), False),
        ("SUBSETS", lambda o: _join([_d(s).get("name") for s in _l(_spec(o).get("subsets"))], "<none>"), True),
    ],
    "Gateway": [
        ("SELECTOR", lambda o: _selector(_spec(o).get("selector")), True),
        ("SERVERS", lambda o: _join(
            [f"{_d(_d(s).get('port')).get('number')}/{_d(_d(s).get('port')).get('protocol')}"
             for s in _l(_spec(o).get("servers"))], "<none>"), True),
    ],
    "ServiceEntry": [
        ("HOSTS", lambda o: _json_list(_l(_spec(o).get("hosts"))), False),
        ("LOCATION", lambda o: str(_spec(o).get("location") or ""), False),
        ("RESOLUTION", lambda o: str(_spec(o).get("resolution") or ""), False),
    ],
    "WorkloadEntry": [("ADDRESS", lambda o: str(_spec(o).get("address") or ""), False)],
    "PeerAuthentication": [("MODE", lambda o: str(_d(_spec(o).get("mtls")).get("mode") or ""), False)],
    "AuthorizationPolicy": [("ACTION", lambda o: str(_spec(o).get("action") or "ALLOW"), False)],
    "Service": [
        ("TYPE", lambda o: str(_spec(o).get("type") or "ClusterIP"), False),
        ("CLUSTER-IP", lambda o: str(_spec(o).get("clusterIP") or "<none>"), False),
        ("EXTERNAL-IP", lambda o: _join(_l(_spec(o).get("externalIPs")), "<none>"), False),
        ("PORT(S)", lambda o: _ports(_spec(o)), False),
        ("SELECTOR", lambda o: _selector(_spec(o).get("selector")), True),
    ],
    "Deployment": [
        ("READY", lambda o: f"{_int(_d(o.get('status')).get('readyReplicas'))}/{_spec(o).get('replicas', 1)}", False),
        ("UP-TO-DATE", lambda o: str(_int(_d(o.get("status")).get("updatedReplicas"))), False),
        ("AVAILABLE", lambda o: str(_int(_d(o.get("status")).get("availableReplicas"))), False),
        AGE_COLUMN,
        ("CONTAINERS", lambda o: _join([_d(c).get("name") for c in _l(_pod_template(o).get("containers"))]), True),
        ("IMAGES", lambda o: _join([_d(c).get("image") for c in _l(_pod_template(o).get("containers"))]), True),
        ("SELECTOR", lambda o: _selector(_spec(o).get("selector")), True),
    ],
    "Pod": [
        ("READY", lambda o: _pod_ready(o), False),
        ("STATUS", lambda o: pod_status_reason(o), False),
        ("RESTARTS", lambda o: _pod_restarts(o), False),
        AGE_COLUMN,
        ("IP", lambda o: str(_d(o.get("status")).get("podIP") or "<none>"), False),
        ("NODE", lambda o: str(_spec(o).get("nodeName") or "<none>"), True),
        ("NOMINATED NODE", lambda o: "<none>", True),
        ("READINESS GATES", lambda o: "<none>", True),
    ],
    "Namespace": [("STATUS", lambda o: str(_d(o.get("status")).get("phase") or "Active"), False)],
    "ConfigMap": [("DATA", lambda o: str(len(_d(o.get("data"))) + len(_d(o.get("binaryData")))), False)],
    "Secret": [
        ("TYPE", lambda o: str(o.get("type") or "Opaque"), False),
        ("DATA", lambda o: str(len(_d(o.get("data"))) + len(_d(o.get("stringData")))), False),
    ],
}


def render_table(
    items: list[dict[str, Any]],
    kind: str,
    *,
    all_namespaces: bool,
    wide: bool,
    sources: list[str | None] | None = None,
    headers: bool = True,
    prefix: str = "",
    now: dt.datetime | None = None,
) -> str:
    cols = [c for c in COLUMNS.get(kind, []) if wide or not c[2]]
    if not any(c is AGE_COLUMN for c in cols):
        cols.append(AGE_COLUMN)
    head = (["NAMESPACE"] if all_namespaces else []) + ["NAME"] + [c[0] for c in cols]
    if wide:
        head.append("SOURCE")
    rows = []
    for i, o in enumerate(items):
        md = _d(o.get("metadata"))
        row = ([str(md.get("namespace") or "")] if all_namespaces else []) + [prefix + str(md.get("name", ""))]
        row += [age(md.get("creationTimestamp"), now) if c is AGE_COLUMN else c[1](o) for c in cols]
        if wide:
            row.append((sources[i] if sources and i < len(sources) else None) or "<none>")
        rows.append(row)
    return table(rows, head if headers else None)


def _resolve(kind: str) -> Any:
    from pilotfish.api.kinds import resolve

    try:
        return resolve(kind)
    except KeyError:
        return None  # the server says it does not know the kind


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    kinds = [k for k in args.kind.split(",") if k]
    if not kinds:
        print("error: give a kind (vs, dr, gw, se, svc, deploy, po, ...)", file=err)
        return 2
    if args.names and len(kinds) > 1:
        print("error: names cannot be given with several kinds", file=err)
        return 2
    ns = None if args.all_namespaces else (args.namespace or "default")
    client = Client.from_args(args)
    found: list[tuple[dict[str, Any], list[dict[str, Any]], list[str | None]]] = []
    code = 0
    for kind in kinds:
        try:
            if args.names:
                items, sources = [], []
                info: dict[str, Any] = {}
                local = _resolve(kind)
                get_ns = (ns or "default") if local is None or local.namespaced else None
                for name in args.names:
                    try:
                        res = client.get(kind, get_ns, name)
                    except ApiError as e:
                        if e.status == 404 and "resource type" not in e.message:
                            code = fail(e, err)
                            continue
                        raise
                    info = res.get("resource") or info
                    items.append(res["object"])
                    sources.append(res.get("source"))
                if info:
                    found.append((info, items, sources))
            else:
                res = client.list(kind, ns)
                found.append((res.get("resource") or {}, res.get("items") or [], res.get("sources") or []))
        except ApiError as e:
            return fail(e, err)
    if args.output in ("json", "yaml"):
        all_items = [o for _, items, _ in found for o in items]
        doc: Any
        if args.names and len(all_items) == 1:
            doc = all_items[0]
        else:
            doc = {"apiVersion": "v1", "kind": "List", "items": all_items, "metadata": {"resourceVersion": ""}}
        if args.output == "json":
            print(json.dumps(doc, indent=4, ensure_ascii=False), file=out)
        else:
            import yaml

            out.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True))
        return code
    total = sum(len(items) for _, items, _ in found)
    if total == 0:
        if code == 0:
            where = "" if ns is None else f" in {ns} namespace"
            print(f"No resources found{where}.", file=err)
        return code
    multi = len([f for f in found if f[1]]) > 1
    first = True
    for info, items, sources in found:
        if not items:
            continue
        if not first:
            print(file=out)
        first = False
        if args.output == "name":
            for o in items:
                print(f"{info.get('resource', '')}/{_d(o.get('metadata')).get('name')}", file=out)
            continue
        cluster_scoped = info.get("namespaced") is False
        prefix = f"{info.get('resource', '')}/" if multi else ""
        out.write(
            render_table(
                items,
                str(info.get("kind", "")),
                all_namespaces=args.all_namespaces and not cluster_scoped,
                wide=args.output == "wide",
                sources=sources,
                headers=not args.no_headers,
                prefix=prefix,
            )
        )
    return code
