"""gateway.ConflictingGatewayAnalyzer: two Gateways on the same workload must not define the
same host on the same port (and bind address); the gateway cannot serve both (IST0145)."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import as_dict, as_int, as_list, as_str, selector_matches, selector_string, str_map


def _servers(gw: Obj) -> list[tuple[int, str, list[str]]]:
    out = []
    for server in as_list(gw.spec.get("servers")):
        server = as_dict(server)
        port = as_int(as_dict(server.get("port")).get("number"))
        hosts = [as_str(h) for h in as_list(server.get("hosts"))]
        out.append((port, as_str(server.get("bind")), hosts))
    return out


def _overlap(ctx: Context, a: dict[str, str], b: dict[str, str]) -> bool:
    """Selectors that pick the same workloads: equal, or one refines the other and some pod
    matches both."""
    if a == b:
        return True
    a_in_b = all(b.get(k) == v for k, v in a.items())
    b_in_a = all(a.get(k) == v for k, v in b.items())
    if not (a_in_b or b_in_a):
        return False
    both = {**a, **b}
    return any(selector_matches(both, p.labels) for p in ctx.all("Pod"))


@analyzer(
    "gateway.ConflictingGatewayAnalyzer",
    "Checks a gateway's selector, port number and hosts",
    ("IST0101", "IST0145"),
)
def conflicting_gateways(ctx: Context) -> None:
    gateways = ctx.all("Gateway")
    info = [(gw, str_map(gw.spec.get("selector")), _servers(gw)) for gw in gateways]
    for gw, sel, servers in info:
        sel_text = selector_string(sel)
        peers = [(o, osrv) for o, osel, osrv in info if o is not gw and _overlap(ctx, sel, osel)]
        if sel and not servers and not peers:
            if ctx.workloads_known and not any(
                selector_matches(sel, p.labels) for p in ctx.all("Pod")
            ):
                ctx.report(
                    m("ReferencedResourceNotFound"),
                    gw,
                    "selector",
                    sel_text,
                    path=("spec", "selector"),
                )
            continue
        for port, bind, hosts in servers:
            conflicting: list[str] = []
            for other, other_servers in peers:
                taken = {(h, b) for p, b, hs in other_servers if p == port for h in hs}
                if any((h, bind) in taken for h in hosts):
                    conflicting.append(other.full_name)
            if conflicting:
                ctx.report(
                    m("ConflictingGateways"),
                    gw,
                    ",".join(sorted(conflicting)),
                    sel_text,
                    str(port),
                    ",".join(hosts),
                )
