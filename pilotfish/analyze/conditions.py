"""conditions.ConditionAnalyzer: status conditions that report a problem on Services,
ServiceEntries, AuthorizationPolicies and Gateway API resources (IST0171). Files rarely carry
status; a config store that records status does."""

from __future__ import annotations

from typing import Any

from .core import Context, Obj, analyzer
from .messages import m
from .util import as_dict, as_list, as_str

_GATEWAY_API = {"Accepted": "False", "Programmed": "False", "ResolvedRefs": "False"}
NEGATIVE: dict[str, dict[str, str]] = {
    "Service": {"istio.io/WaypointBound": "False"},
    "ServiceEntry": {"istio.io/WaypointBound": "False"},
    "AuthorizationPolicy": {"ZtunnelAccepted": "False", "WaypointAccepted": "False"},
    "KubernetesGateway": _GATEWAY_API,
    "HTTPRoute": _GATEWAY_API,
    "GRPCRoute": _GATEWAY_API,
}


def conditions_of(obj: Obj) -> list[dict[str, Any]]:
    status = obj.status
    if obj.key in ("HTTPRoute", "GRPCRoute"):
        return [
            as_dict(c)
            for p in as_list(status.get("parents"))
            for c in as_list(as_dict(p).get("conditions"))
        ]
    return [as_dict(c) for c in as_list(status.get("conditions"))]


@analyzer(
    "conditions.ConditionAnalyzer",
    "Checks for negative status conditions on resources",
    ("IST0171",),
)
def negative_conditions(ctx: Context) -> None:
    for key, negative in NEGATIVE.items():
        for obj in ctx.all(key):
            for cond in conditions_of(obj):
                ctype, status = as_str(cond.get("type")), as_str(cond.get("status"))
                reason, message = as_str(cond.get("reason")), as_str(cond.get("message"))
                partly = (
                    key == "AuthorizationPolicy"
                    and ctype == "WaypointAccepted"
                    and reason == "PartiallyInvalid"
                )
                if negative.get(ctype) == status or partly:
                    ctx.report(m("NegativeConditionStatus"), obj, ctype, reason, message)
