"""virtualservice.JWTClaimRouteAnalyzer: routing on JWT claims (``@request.auth.claims.*``
headers) through a gateway needs a RequestAuthentication that applies to the gateway's pods,
or the claims are never extracted (IST0149)."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import (
    JWT_CLAIM_HEADER_PREFIX,
    MESH_GATEWAY,
    as_dict,
    as_list,
    as_str,
    root_namespace,
    selector_matches,
    str_map,
    workload_selector,
)
from .vs_gateways import split_ref


def claim_route_key(vs: Obj) -> str:
    """The first header key of an http match that routes on a JWT claim, or ""."""
    for rule in as_list(vs.spec.get("http")):
        for match in as_list(as_dict(rule).get("match")):
            match = as_dict(match)
            for field in ("headers", "withoutHeaders"):
                for key in as_dict(match.get(field)):
                    if str(key).startswith(JWT_CLAIM_HEADER_PREFIX):
                        return str(key)
    return ""


@analyzer(
    "virtualservice.JWTClaimRouteAnalyzer",
    "Checks the VirtualService using JWT claim based routing has corresponding RequestAuthentication",
    ("IST0149",),
)
def jwt_claim_routes(ctx: Context) -> None:
    ra_by_ns: dict[str, list[dict[str, str]]] = {}
    for ra in ctx.all("RequestAuthentication"):
        ra_by_ns.setdefault(ra.ns, []).append(workload_selector(ra) or {})
    root = root_namespace(ctx)
    for vs in ctx.all("VirtualService"):
        key = claim_route_key(vs)
        if not key:
            continue
        for ref in as_list(vs.spec.get("gateways")):
            ref = as_str(ref)
            if ref == MESH_GATEWAY:
                continue
            ns, name = split_ref(vs.ns, ref)
            gw = ctx.find("Gateway", ns, name)
            if gw is None:
                continue  # the gateway analyzer reports it
            gw_sel = str_map(gw.spec.get("selector"))
            gw_name = f"{ns}/{name}" if ns else name
            for pod in ctx.all("Pod"):
                if not selector_matches(gw_sel, pod.labels):
                    continue
                selectors = ra_by_ns.get(root, []) + (
                    ra_by_ns.get(pod.ns, []) if pod.ns != root else []
                )
                if not any(selector_matches(s, pod.labels) for s in selectors):
                    ctx.report(
                        m("JwtClaimBasedRoutingWithoutRequestAuthN"), vs, key, gw_name, pod.name
                    )
