"""Kubernetes Gateway API kinds (``gateway.networking.k8s.io``): Gateway and HTTPRoute.

Modelled so that Istio's Gateway API samples parse and validate; the structure follows the
Gateway API v1 reference. Filters, TLS options and other extension points are kept as given
(``Any``); Pilotfish does not act on these kinds yet (the kind registry says so and validation
warns).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from pilotfish.api.schema import Duration, Model
from pilotfish.api.types.meta import TypedObject

_PORT = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_NAME = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
_SECTION = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]


class ParentReference(Model):
    name: _NAME
    group: str = "gateway.networking.k8s.io"
    kind: str = "Gateway"
    namespace: str | None = None
    section_name: _SECTION | None = None
    port: _PORT | None = None


class RouteNamespaces(Model):
    from_: str = msgspec.field(default="Same", name="from")  # All, Selector or Same
    selector: Any = None


class RouteGroupKind(Model):
    kind: str
    group: str = "gateway.networking.k8s.io"


class AllowedRoutes(Model):
    namespaces: RouteNamespaces | None = None
    kinds: list[RouteGroupKind] = []


class SecretObjectReference(Model):
    name: _NAME
    group: str = ""
    kind: str = "Secret"
    namespace: str | None = None


class GatewayTLSConfig(Model):
    mode: str = "Terminate"  # Terminate or Passthrough
    certificate_refs: list[SecretObjectReference] = []
    frontend_validation: Any = None
    options: dict[str, str] = {}


class Listener(Model):
    name: _SECTION
    port: _PORT
    protocol: str  # HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed custom protocol
    hostname: str | None = None
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes | None = None


class GatewayAddress(Model):
    value: str
    type: str = "IPAddress"


class GatewaySpec(Model):
    gateway_class_name: _NAME
    listeners: Annotated[list[Listener], msgspec.Meta(min_length=1, max_length=64)]
    addresses: list[GatewayAddress] = []
    infrastructure: Any = None
    backend_tls: Any = msgspec.field(default=None, name="backendTLS")
    allowed_listeners: Any = None


class Gateway(TypedObject):
    spec: GatewaySpec
    status: Any = None


class HTTPPathMatch(Model):
    type: str = "PathPrefix"  # Exact, PathPrefix or RegularExpression
    value: str = "/"


class HTTPHeaderMatch(Model):
    name: str
    value: str
    type: str = "Exact"  # Exact or RegularExpression


class HTTPRouteMatch(Model):
    path: HTTPPathMatch | None = None
    headers: list[HTTPHeaderMatch] = []
    query_params: list[HTTPHeaderMatch] = []
    method: str | None = None


class HTTPBackendRef(Model):
    name: _NAME
    group: str = ""
    kind: str = "Service"
    namespace: str | None = None
    port: _PORT | None = None
    weight: Annotated[int, msgspec.Meta(ge=0, le=1000000)] = 1
    filters: list[Any] = []


class HTTPRouteTimeouts(Model):
    request: Duration | None = None
    backend_request: Duration | None = None


class HTTPRouteRule(Model):
    name: str | None = None
    matches: list[HTTPRouteMatch] = []
    filters: list[Any] = []
    backend_refs: list[HTTPBackendRef] = []
    timeouts: HTTPRouteTimeouts | None = None
    retry: Any = None
    session_persistence: Any = None


class HTTPRouteSpec(Model):
    parent_refs: Annotated[list[ParentReference], msgspec.Meta(max_length=32)] = []
    hostnames: list[str] = []
    rules: Annotated[list[HTTPRouteRule], msgspec.Meta(max_length=16)] = []


class HTTPRoute(TypedObject):
    spec: HTTPRouteSpec = msgspec.field(default_factory=HTTPRouteSpec)
    status: Any = None
