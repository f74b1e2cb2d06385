"""applicationUID.Analyzer: application containers must not run as UID 1337, the proxy's user;
traffic from that user bypasses interception (IST0144)."""

from __future__ import annotations

from typing import Any

from .core import Context, Obj, analyzer
from .messages import m
from .util import as_dict, as_int, containers, template_of

PROXY_UID = 1337
PROXY_CONTAINERS = frozenset({"istio-proxy", "istio-init", "istio-validation"})


def _runs_as_proxy(pod_spec: dict[str, Any]) -> bool:
    if as_int(as_dict(pod_spec.get("securityContext")).get("runAsUser"), -1) == PROXY_UID:
        return True
    for c in containers(pod_spec):
        if c.get("name") in PROXY_CONTAINERS:
            continue
        if as_int(as_dict(c.get("securityContext")).get("runAsUser"), -1) == PROXY_UID:
            return True
    return False


@analyzer(
    "applicationUID.Analyzer",
    "Checks invalid application UID",
    ("IST0144",),
)
def application_uid(ctx: Context) -> None:
    objs: list[tuple[Obj, dict[str, Any]]] = [
        (p, p.spec) for p in ctx.all("Pod") if not p.synthetic
    ]
    objs += [(d, as_dict(template_of(d).get("spec"))) for d in ctx.all("Deployment")]
    for obj, spec in objs:
        if _runs_as_proxy(spec):
            ctx.report(m("InvalidApplicationUID"), obj)
