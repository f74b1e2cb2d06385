"""deprecation.DeprecationAnalyzer: fields and kinds Istio deprecated or removed (IST0002):
``fault.delay.percent`` in VirtualService routes, ``outboundTrafficPolicy.egressProxy`` in
Sidecars, and the removed ``rbac.istio.io`` kinds."""

from __future__ import annotations

from .core import Context, analyzer
from .messages import m
from .util import as_dict, as_list, as_str

REMOVED_KINDS = {
    ("rbac.istio.io", "ClusterRbacConfig"),
    ("rbac.istio.io", "RbacConfig"),
    ("rbac.istio.io", "ServiceRole"),
    ("rbac.istio.io", "ServiceRoleBinding"),
}


@analyzer(
    "deprecation.DeprecationAnalyzer",
    "Checks for deprecated Istio types and fields",
    ("IST0002",),
)
def deprecations(ctx: Context) -> None:
    deprecated = m("Deprecated")
    for vs in ctx.all("VirtualService"):
        for i, rule in enumerate(as_list(vs.spec.get("http"))):
            delay = as_dict(as_dict(as_dict(rule).get("fault")).get("delay"))
            pct = delay.get("percent")
            if isinstance(pct, (int, float)) and not isinstance(pct, bool) and pct > 0:
                ctx.report(
                    deprecated,
                    vs,
                    "HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
                    path=("spec", "http", i, "fault", "delay", "percent"),
                )
    for sc in ctx.all("Sidecar"):
        if isinstance(as_dict(sc.spec.get("outboundTrafficPolicy")).get("egressProxy"), dict):
            ctx.report(
                deprecated,
                sc,
                "OutboundTrafficPolicy.EgressProxy ignored",
                path=("spec", "outboundTrafficPolicy", "egressProxy"),
            )
    for crd in ctx.all("CustomResourceDefinition"):
        group = as_str(crd.spec.get("group"))
        kind = as_str(as_dict(crd.spec.get("names")).get("kind"))
        if (group, kind) in REMOVED_KINDS:
            ctx.report(deprecated, crd, f"Custom resource type {group} {kind} is removed")
    for group, kind in sorted(REMOVED_KINDS):
        for obj in ctx.all(kind):
            if obj.res.group == group:
                ctx.report(deprecated, obj, f"Custom resource type {group} {kind} is removed")
