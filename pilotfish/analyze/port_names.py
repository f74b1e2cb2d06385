"""service.PortNameAnalyzer: a Service port's protocol comes from ``appProtocol`` or from the
port name (``<protocol>[-<suffix>]``); ports that name no protocol are treated as plain TCP
(IST0118). For ExternalName Services a port named just ``tcp`` or without a protocol keeps
HTTP traffic from being routed correctly (IST0150)."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import SYSTEM_NAMESPACES, as_dict, as_int, as_list, as_str

PROTOCOLS = frozenset(
    {
        "tcp",
        "udp",
        "grpc",
        "grpc-web",
        "http",
        "http_proxy",
        "http2",
        "https",
        "tls",
        "mongo",
        "redis",
        "mysql",
    }
)
# Ports that default to TCP when their name says nothing (MySQL, MongoDB, memcached).
WELL_KNOWN_TCP_PORTS = frozenset({3306, 27017, 11211})
MANAGED_GATEWAY_LABEL = "gateway.istio.io/managed"
MANAGED_GATEWAY_VALUES = frozenset(
    {"istio.io-gateway-controller", "istio.io-mesh-controller", "istio.io-eastwest-controller"}
)


def port_protocol(port: int, name: str, protocol: str, app_protocol: str | None) -> str | None:
    """The protocol Istio assumes for a Service port, None when it cannot tell (Istio's
    ``ConvertProtocol``)."""
    if protocol.upper() == "UDP":
        return "udp"
    if protocol.upper() == "SCTP":
        return "sctp"
    text = name
    if app_protocol is not None:
        text = app_protocol
        if text == "kubernetes.io/h2c":
            return "http2"
        if text in ("kubernetes.io/ws", "kubernetes.io/wss"):
            return "http"
    low = text.lower()
    if low.startswith("grpc-web"):
        return "grpc-web"
    head = low.split("-", 1)[0]
    if head in PROTOCOLS:
        return head
    if port in WELL_KNOWN_TCP_PORTS:
        return "tcp"
    return None


def is_control_plane(svc: Obj) -> bool:
    return "istio" in svc.labels or svc.labels.get("release") == "istio"


@analyzer(
    "service.PortNameAnalyzer",
    "Checks the port names associated with each service",
    ("IST0118", "IST0150"),
)
def port_names(ctx: Context) -> None:
    for svc in ctx.all("Service"):
        if svc.synthetic or svc.ns in SYSTEM_NAMESPACES or is_control_plane(svc):
            continue
        if svc.labels.get(MANAGED_GATEWAY_LABEL) in MANAGED_GATEWAY_VALUES:
            continue
        external = as_str(svc.spec.get("type")) == "ExternalName"
        for i, p in enumerate(as_list(svc.spec.get("ports"))):
            p = as_dict(p)
            name = as_str(p.get("name"))
            number = as_int(p.get("port"))
            app = p.get("appProtocol")
            proto = port_protocol(
                number, name, as_str(p.get("protocol")), None if app is None else as_str(app)
            )
            if proto is not None and not (external and name == "tcp"):
                continue
            path = ("spec", "ports", i)
            if external:
                ctx.report(m("ExternalNameServiceTypeInvalidPortName"), svc, path=path)
            else:
                tp = p.get("targetPort")
                ctx.report(
                    m("PortNameIsNotUnderNamingConvention"),
                    svc,
                    name,
                    number,
                    "0" if tp is None else str(tp),
                    path=path,
                )
