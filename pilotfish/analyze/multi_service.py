"""deployment.MultiServiceAnalyzer: when several Services select the pods of one in-mesh
Deployment, they must agree on the protocol of a port (IST0116) and must not map different
service ports to the same target port (IST0137)."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import (
    as_dict,
    as_int,
    as_list,
    as_str,
    deployment_in_mesh,
    selector_matches,
    str_map,
    template_of,
)


def _matching_services(ctx: Context, dep: Obj) -> list[Obj]:
    labels = str_map(as_dict(template_of(dep).get("metadata")).get("labels"))
    out = []
    for svc in ctx.all("Service"):
        sel = str_map(svc.spec.get("selector"))
        if sel and svc.ns == dep.ns and selector_matches(sel, labels):
            out.append(svc)
    return out


@analyzer(
    "deployment.MultiServiceAnalyzer",
    "Checks association between services and pods",
    ("IST0116", "IST0137"),
)
def multi_service(ctx: Context) -> None:
    for dep in ctx.all("Deployment"):
        if not deployment_in_mesh(ctx, dep):
            continue
        services = _matching_services(ctx, dep)
        if not services:
            continue
        protocols: dict[int, dict[str, list[str]]] = {}
        targets: dict[str, dict[int, str]] = {}
        for svc in services:
            for p in as_list(svc.spec.get("ports")):
                p = as_dict(p)
                port = as_int(p.get("port"))
                proto = as_str(p.get("protocol")) or "TCP"
                protocols.setdefault(port, {}).setdefault(proto, []).append(svc.full_name)
                tp = p.get("targetPort")
                tp_text = str(port) if tp in (None, "", 0, "0") else str(tp)
                targets.setdefault(tp_text, {})[port] = svc.full_name
        for port, by_proto in protocols.items():
            if len(by_proto) > 1:
                names = [n for proto in sorted(by_proto) for n in by_proto[proto]]
                ctx.report(
                    m("DeploymentAssociatedToMultipleServices"),
                    dep,
                    dep.name,
                    port,
                    names,
                    path=("metadata", "name"),
                )
        for tp, by_port in targets.items():
            if len(by_port) > 1:
                ctx.report(
                    m("DeploymentConflictingPorts"),
                    dep,
                    dep.name,
                    list(by_port.values()),
                    tp,
                    list(by_port),
                    path=("metadata", "name"),
                )
