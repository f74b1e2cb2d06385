"""virtualservice.DestinationHostAnalyzer: route and mirror destinations must name a known
service (Kubernetes Service or ServiceEntry host visible from the VirtualService), with a port
the service has, or a port at all when the service has several (IST0101, IST0112); a gateway
route without a subset next to mesh routes that use subsets for the same host (IST0140)."""

from __future__ import annotations

from typing import Any

from .core import Context, Obj, Path, analyzer
from .messages import m
from .util import ServiceRecord, as_dict, as_list, as_str, lookup_destination
from .vs_util import has_port, mirror_destinations, port_number, route_destinations


def _check_ports(
    ctx: Context, vs: Obj, dest: dict[str, Any], rec: ServiceRecord, path: Path
) -> None:
    host = as_str(dest.get("host"))
    numbers = rec.port_numbers()
    if not has_port(dest):
        if len(numbers) > 1:
            ctx.report(
                m("VirtualServiceDestinationPortSelectorRequired"), vs, host, numbers, path=path
            )
        return
    port = port_number(dest)
    if port not in numbers:
        ctx.report(m("ReferencedResourceNotFound"), vs, "host:port", f"{host}:{port}", path=path)


def _subset_destinations(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """VirtualService full name -> its http destinations that use a subset and route to one of
    the VirtualService's own hosts."""
    out: dict[str, list[dict[str, Any]]] = {}
    for vs in ctx.all("VirtualService"):
        hosts = [as_str(h) for h in as_list(vs.spec.get("hosts"))]
        for rule in as_list(vs.spec.get("http")):
            for rd in as_list(as_dict(rule).get("route")):
                dest = as_dict(as_dict(rd).get("destination"))
                if dest.get("subset") and as_str(dest.get("host")) in hosts:
                    out.setdefault(vs.full_name, []).append(dest)
    return out


@analyzer(
    "virtualservice.DestinationHostAnalyzer",
    "Checks the destination hosts associated with each virtual service",
    ("IST0101", "IST0112", "IST0140"),
)
def destination_hosts(ctx: Context) -> None:
    subset_dests = _subset_destinations(ctx)
    check_hosts = ctx.need_services("destination host checks")
    for vs in ctx.all("VirtualService"):
        spec = vs.spec
        export_to = spec.get("exportTo")
        for _kind, _i, _j, dest, path in route_destinations(spec) if check_hosts else ():
            host = as_str(dest.get("host"))
            rec = lookup_destination(ctx, vs.ns, export_to, host)
            if rec is None:
                ctx.report(m("ReferencedResourceNotFound"), vs, "host", host, path=path)
                continue
            _check_ports(ctx, vs, dest, rec, path)
        for _i, dest, path in mirror_destinations(spec) if check_hosts else ():
            host = as_str(dest.get("host"))
            rec = lookup_destination(ctx, vs.ns, export_to, host)
            if rec is None:
                ctx.report(m("ReferencedResourceNotFound"), vs, "mirror host", host, path=path)
                continue
            _check_ports(ctx, vs, dest, rec, path)
        # A gateway route without a subset, for a host that mesh routes split by subset: the
        # subsets do not apply to requests coming through the gateway.
        if not as_list(spec.get("gateways")):
            continue
        for kind, _i, _j, dest, path in route_destinations(spec):
            if kind != "http" or dest.get("subset"):
                continue
            host = as_str(dest.get("host"))
            for other, dests in subset_dests.items():
                for d in dests:
                    if as_str(d.get("host")) == host:
                        ctx.report(
                            m("IngressRouteRulesNotAffected"), vs, other, vs.full_name, path=path
                        )
