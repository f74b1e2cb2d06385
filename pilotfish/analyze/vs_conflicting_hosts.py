"""virtualservice.ConflictingMeshGatewayHostsAnalyzer: two VirtualServices bound to the mesh
gateway must not claim the same host in the same scope; which one wins is undefined (IST0109).

A host exported to one namespace also conflicts with a host exported everywhere that matches
it (wildcards included). Each VirtualService is reported once."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import (
    EXPORT_ALL,
    MESH_GATEWAY,
    as_list,
    as_str,
    cluster_domain,
    export_scopes,
    host_matches,
    to_fqdn,
)


def _bound_to_mesh(vs: Obj) -> bool:
    gws = [as_str(g) for g in as_list(vs.spec.get("gateways"))]
    return not gws or MESH_GATEWAY in gws


@analyzer(
    "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
    "Checks if multiple virtual services associated with the mesh gateway have conflicting hosts",
    ("IST0109",),
)
def conflicting_mesh_gateway_hosts(ctx: Context) -> None:
    domain = cluster_domain(ctx)
    by_host: dict[tuple[str, str], list[Obj]] = {}
    for vs in ctx.all("VirtualService"):
        if not _bound_to_mesh(vs):
            continue
        scopes = sorted(export_scopes(vs.spec.get("exportTo"), vs.ns))
        for scope in scopes:
            for h in as_list(vs.spec.get("hosts")):
                lst = by_host.setdefault((scope, to_fqdn(vs.ns, as_str(h), domain)), [])
                if vs not in lst:
                    lst.append(vs)
    reported: set[int] = set()
    for (scope, fqdn), vss in by_host.items():
        group = list(vss)
        if scope != EXPORT_ALL:
            for (other_scope, other_host), others in by_host.items():
                if other_scope == EXPORT_ALL and host_matches(fqdn, other_host):
                    group += [o for o in others if o not in group]
        if len(group) < 2:
            continue
        names = ",".join(v.full_name for v in group)
        for vs in group:
            if id(vs) in reported:
                continue
            reported.add(id(vs))
            ctx.report(
                m("ConflictingMeshGatewayVirtualServiceHosts"),
                vs,
                names,
                f"{scope}/{fqdn}",
                path=("metadata", "name"),
            )
