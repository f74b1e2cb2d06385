"""Protocol selection for service ports, as Istio does it.

A Kubernetes Service port's protocol comes from, in order:

1. ``protocol: UDP`` (or SCTP): not proxied;
2. ``appProtocol`` if set (``kubernetes.io/h2c`` is HTTP2, ``kubernetes.io/ws`` HTTP,
   ``kubernetes.io/wss`` HTTPS; otherwise read like a port name);
3. the port name: ``<protocol>`` or ``<protocol>-<suffix>`` (``http-web``, ``grpc-web``,
   ``tcp-db``...), case-insensitive;
4. well-known ports that speak first (MySQL 3306, MongoDB 27017, memcached 11211): TCP;
5. otherwise the protocol is **detected** at run time in Istio (sniffing). Pilotfish does not
   sniff yet and treats such ports as **HTTP** (``AUTO`` below counts as HTTP).

A ServiceEntry port names its protocol in ``protocol`` (empty: detected, so ``AUTO``).
"""

from __future__ import annotations

from pilotfish.api.checks import parse_protocol  # Istio's canonical protocol names

__all__ = [
    "AUTO",
    "HTTP_PROTOCOLS",
    "TCP_PROTOCOLS",
    "is_http",
    "is_tcp",
    "parse",
    "service_port_protocol",
    "service_entry_port_protocol",
]

#: A port whose protocol Istio would detect at run time (unnamed or unknown name).
AUTO = "AUTO"
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-Web", "HTTP_PROXY", AUTO})
TCP_PROTOCOLS = frozenset({"TCP", "HTTPS", "TLS", "Mongo", "MySQL", "Redis"})
_WELL_KNOWN_TCP_PORTS = frozenset({3306, 27017, 11211})


def parse(value: str) -> str | None:
    """Canonical protocol name for ``value`` (case-insensitive), or None."""
    return parse_protocol(value)


def is_http(protocol: str) -> bool:
    """HTTP-like (HTTP, HTTP2, gRPC...), or detected (``AUTO``, treated as HTTP for now)."""
    return protocol in HTTP_PROTOCOLS


def is_tcp(protocol: str) -> bool:
    """Proxied as opaque TCP (TCP, TLS, HTTPS, Mongo, MySQL, Redis)."""
    return protocol in TCP_PROTOCOLS


def service_port_protocol(port: int, name: str, protocol: str = "TCP", app_protocol: str = "") -> str:
    """The protocol of a Kubernetes Service port (see the module docstring)."""
    transport = (protocol or "TCP").upper()
    if transport in ("UDP", "SCTP"):
        return "UDP"
    text = name or ""
    if app_protocol:
        text = app_protocol
        if text == "kubernetes.io/h2c":
            return "HTTP2"
        if text == "kubernetes.io/ws":
            return "HTTP"
        if text == "kubernetes.io/wss":
            return "HTTPS"
    low = text.lower()
    if low.startswith("grpc-web"):
        return "GRPC-Web"
    found = parse(low.split("-", 1)[0]) if low else None
    if found is not None:
        return found
    if port in _WELL_KNOWN_TCP_PORTS:
        return "TCP"
    return AUTO


def service_entry_port_protocol(protocol: str) -> str:
    """The protocol of a ServiceEntry port: its ``protocol`` field; empty or unknown: AUTO."""
    return parse(protocol) or AUTO if protocol else AUTO
