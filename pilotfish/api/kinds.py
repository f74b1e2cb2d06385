"""The registry of resource kinds Pilotfish knows: API group, kind, API versions, scope, model.

Three levels of support:

- ``full``: parsed into a typed model, validated, and used by the mesh.
- ``parsed``: parsed and validated, but the mesh does not act on it yet (validation says so
  with a warning). The Kubernetes Gateway API kinds are here.
- ``ignored``: recognized (so the message is precise), not parsed; a warning says it is skipped.

Anything else is an unknown kind: a warning, and the document is skipped. Nothing is dropped
without a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pilotfish.api.types import gatewayapi, k8s, networking, security, telemetry

if TYPE_CHECKING:  # pragma: no cover
    from pilotfish.api.loader import Resource

Support = Literal["full", "parsed", "ignored"]

CORE = ""
APPS = "apps"
NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
TELEMETRY = "telemetry.istio.io"
EXTENSIONS = "extensions.istio.io"
GATEWAY_API = "gateway.networking.k8s.io"


@dataclass(frozen=True, slots=True)
class KindInfo:
    group: str
    kind: str
    versions: tuple[str, ...]
    plural: str
    model: type | None = None
    namespaced: bool = True
    support: Support = "full"
    short_names: tuple[str, ...] = ()
    note: str = ""

    @property
    def api_versions(self) -> tuple[str, ...]:
        """``apiVersion`` values accepted, newest first (``v1`` for the core group)."""
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)

    @property
    def preferred_api_version(self) -> str:
        return self.api_versions[0]

    @property
    def qualified(self) -> str:
        """``VirtualService.networking.istio.io``; core kinds are just ``Service``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def resource(self) -> str:
        """kubectl's name: ``virtualservice.networking.istio.io``, ``service``."""
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.kind)


_NET_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_SEC_VERSIONS = ("v1", "v1beta1")
_TEL_VERSIONS = ("v1", "v1alpha1")
_GW_VERSIONS = ("v1", "v1beta1")

KINDS: tuple[KindInfo, ...] = (
    # Kubernetes
    KindInfo(CORE, "Namespace", ("v1",), "namespaces", k8s.Namespace, namespaced=False, short_names=("ns",)),
    KindInfo(CORE, "Service", ("v1",), "services", k8s.Service, short_names=("svc",)),
    KindInfo(CORE, "Pod", ("v1",), "pods", k8s.Pod, short_names=("po",)),
    KindInfo(CORE, "ServiceAccount", ("v1",), "serviceaccounts", k8s.ServiceAccount, short_names=("sa",)),
    KindInfo(CORE, "Secret", ("v1",), "secrets", k8s.Secret),
    KindInfo(CORE, "ConfigMap", ("v1",), "configmaps", k8s.ConfigMap, short_names=("cm",)),
    KindInfo(APPS, "Deployment", ("v1",), "deployments", k8s.Deployment, short_names=("deploy",)),
    # Istio networking
    KindInfo(NETWORKING, "Gateway", _NET_VERSIONS, "gateways", networking.Gateway, short_names=("gw",)),
    KindInfo(NETWORKING, "VirtualService", _NET_VERSIONS, "virtualservices", networking.VirtualService, short_names=("vs",)),
    KindInfo(NETWORKING, "DestinationRule", _NET_VERSIONS, "destinationrules", networking.DestinationRule, short_names=("dr",)),
    KindInfo(NETWORKING, "ServiceEntry", _NET_VERSIONS, "serviceentries", networking.ServiceEntry, short_names=("se",)),
    KindInfo(NETWORKING, "Sidecar", _NET_VERSIONS, "sidecars", networking.Sidecar),
    KindInfo(NETWORKING, "WorkloadEntry", _NET_VERSIONS, "workloadentries", networking.WorkloadEntry, short_names=("we",)),
    KindInfo(NETWORKING, "WorkloadGroup", _NET_VERSIONS, "workloadgroups", networking.WorkloadGroup, short_names=("wg",)),
    # Istio security
    KindInfo(SECURITY, "PeerAuthentication", _SEC_VERSIONS, "peerauthentications", security.PeerAuthentication, short_names=("pa",)),
    KindInfo(SECURITY, "AuthorizationPolicy", _SEC_VERSIONS, "authorizationpolicies", security.AuthorizationPolicy, short_names=("ap",)),
    KindInfo(SECURITY, "RequestAuthentication", _SEC_VERSIONS, "requestauthentications", security.RequestAuthentication, short_names=("ra",)),
    # Istio telemetry
    KindInfo(TELEMETRY, "Telemetry", _TEL_VERSIONS, "telemetries", telemetry.Telemetry, short_names=("telemetry",)),
    # Kubernetes Gateway API: parsed, validated, not acted on yet
    KindInfo(GATEWAY_API, "Gateway", _GW_VERSIONS, "gateways", gatewayapi.Gateway, support="parsed"),
    KindInfo(GATEWAY_API, "HTTPRoute", _GW_VERSIONS, "httproutes", gatewayapi.HTTPRoute, support="parsed"),
    # Known, not supported: skipped with a warning
    KindInfo(NETWORKING, "EnvoyFilter", ("v1alpha3",), "envoyfilters", support="ignored",
             note="Envoy configuration patches have no meaning for Pilotfish's proxy"),
    KindInfo(NETWORKING, "ProxyConfig", ("v1beta1",), "proxyconfigs", support="ignored"),
    KindInfo(EXTENSIONS, "WasmPlugin", ("v1alpha1",), "wasmplugins", support="ignored",
             note="Pilotfish's proxy does not run WebAssembly filters"),
    KindInfo(EXTENSIONS, "TrafficExtension", ("v1alpha1",), "trafficextensions", support="ignored"),
    KindInfo(GATEWAY_API, "GatewayClass", _GW_VERSIONS, "gatewayclasses", namespaced=False, support="ignored"),
    KindInfo(GATEWAY_API, "GRPCRoute", _GW_VERSIONS, "grpcroutes", support="ignored"),
    KindInfo(GATEWAY_API, "TCPRoute", ("v1alpha2",), "tcproutes", support="ignored"),
    KindInfo(GATEWAY_API, "TLSRoute", ("v1alpha2", "v1alpha3"), "tlsroutes", support="ignored"),
    KindInfo(GATEWAY_API, "UDPRoute", ("v1alpha2",), "udproutes", support="ignored"),
    KindInfo(GATEWAY_API, "ReferenceGrant", ("v1beta1", "v1alpha2"), "referencegrants", support="ignored"),
    KindInfo(CORE, "Endpoints", ("v1",), "endpoints", support="ignored"),
    KindInfo(CORE, "Node", ("v1",), "nodes", namespaced=False, support="ignored"),
    KindInfo("discovery.k8s.io", "EndpointSlice", ("v1",), "endpointslices", support="ignored"),
    KindInfo("networking.k8s.io", "Ingress", ("v1",), "ingresses", support="ignored"),
    KindInfo(APPS, "StatefulSet", ("v1",), "statefulsets", support="ignored"),
    KindInfo(APPS, "DaemonSet", ("v1",), "daemonsets", support="ignored"),
    KindInfo(APPS, "ReplicaSet", ("v1",), "replicasets", support="ignored"),
)

_BY_KEY: dict[tuple[str, str], KindInfo] = {k.key: k for k in KINDS}
_BY_NAME: dict[str, list[KindInfo]] = {}
for _k in KINDS:
    for _n in {_k.kind.lower(), _k.plural, *_k.short_names}:
        _BY_NAME.setdefault(_n, []).append(_k)


def split_api_version(api_version: str) -> tuple[str, str]:
    """``networking.istio.io/v1`` -> (``networking.istio.io``, ``v1``); ``v1`` -> (``""``, ``v1``)."""
    if "/" in api_version:
        group, _, version = api_version.partition("/")
        return group, version
    return "", api_version


def lookup(group: str, kind: str) -> KindInfo | None:
    """The registry entry for an API group and kind, or None."""
    return _BY_KEY.get((group, kind))


def for_resource(res: Resource) -> KindInfo | None:
    """The registry entry for a loaded resource (by its apiVersion's group and its kind)."""
    return _BY_KEY.get((res.group, res.kind))


def resolve(name: str) -> KindInfo:
    """A kind from a user-given name, as kubectl accepts them.

    ``VirtualService``, ``virtualservices``, ``vs``, ``VirtualService.networking.istio.io`` or
    ``gateways.gateway.networking.k8s.io``. A bare ``Gateway`` means Istio's Gateway; the Gateway
    API one needs its group. Raises ``KeyError`` for unknown names.
    """
    if not name:
        raise KeyError("empty kind")
    head, _, group = name.partition(".")
    candidates = _BY_NAME.get(head.lower(), [])
    if group:
        for k in candidates:
            if k.group == group:
                return k
        raise KeyError(f"unknown kind {name!r}")
    if not candidates:
        raise KeyError(f"unknown kind {name!r}")
    # Prefer supported kinds, and Istio's Gateway over the Gateway API one.
    order = {"full": 0, "parsed": 1, "ignored": 2}
    return sorted(candidates, key=lambda k: (order[k.support], k.group == GATEWAY_API))[0]


def supported() -> list[KindInfo]:
    """Kinds that are parsed (support ``full`` or ``parsed``)."""
    return [k for k in KINDS if k.model is not None]
