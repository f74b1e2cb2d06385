"""gateway.IngressGatewayPortAnalyzer: a Gateway must select some gateway workload
(IST0101), and each server port must be a port of the Services in front of that workload (the
Service port or the target port it forwards to) (IST0162); otherwise clients reaching the gateway
through its Service never get there."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import as_dict, as_int, as_list, as_str, selector_matches, selector_string, str_map


def service_selects(svc: Obj, pod: Obj) -> bool:
    """A Service selects the pods of its namespace matching its selector (none without one)."""
    sel = str_map(svc.spec.get("selector"))
    return bool(sel) and svc.ns == pod.ns and selector_matches(sel, pod.labels)


def target_port(port: dict) -> int:
    """The workload port a Service port forwards to: ``targetPort`` when numeric, else ``port``."""
    tp = port.get("targetPort")
    n = as_int(tp) if tp is not None else 0
    return n or as_int(port.get("port"))


@analyzer(
    "gateway.IngressGatewayPortAnalyzer",
    "Checks a gateway's ports against the gateway's Kubernetes service ports",
    ("IST0101", "IST0162"),
)
def ingress_gateway_ports(ctx: Context) -> None:
    if not ctx.need_workloads("gateway workload and port checks"):
        return
    services = ctx.all("Service")
    for gw in ctx.all("Gateway"):
        selector = str_map(gw.spec.get("selector"))
        sel_text = selector_string(selector)
        pods = [p for p in ctx.all("Pod") if selector_matches(selector, p.labels)]
        if not pods:
            ctx.report(
                m("ReferencedResourceNotFound"), gw, "selector", sel_text, path=("spec", "selector")
            )
            continue
        ports: set[int] = set()
        for pod in pods:
            for svc in services:
                if not service_selects(svc, pod):
                    continue
                for p in as_list(svc.spec.get("ports")):
                    p = as_dict(p)
                    if (as_str(p.get("protocol")) or "TCP").upper() == "TCP":
                        # A server may use the workload port, or the Service port that the
                        # gateway translates to it.
                        ports.add(target_port(p))
                        ports.add(as_int(p.get("port")))
        for i, server in enumerate(as_list(gw.spec.get("servers"))):
            port = as_dict(server).get("port")
            if not isinstance(port, dict):
                continue
            number = as_int(port.get("number"))
            if number not in ports:
                ctx.report(
                    m("GatewayPortNotDefinedOnService"),
                    gw,
                    number,
                    sel_text,
                    path=("spec", "servers", i, "port", "number"),
                )
