"""What the registry knows: services, their ports, the workloads behind them and endpoints.

All of these are immutable (frozen dataclasses; their dicts must be treated as read-only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pilotfish.registry.protocol import is_http, is_tcp

__all__ = ["Endpoint", "Service", "ServicePort", "Workload"]

Health = Literal["HEALTHY", "UNHEALTHY", "DRAINING"]
#: How a service's endpoints are found:
#: EDS     -- workloads selected by the service (Kubernetes Service, ServiceEntry STATIC);
#: DNS     -- endpoints are host names resolved by the proxy (ServiceEntry DNS, ExternalName);
#: NONE    -- pass-through: the proxy connects to the address the client asked for
#:            (ServiceEntry resolution NONE; an ORIGINAL_DST cluster).
Resolution = Literal["EDS", "DNS", "NONE"]


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str  # Istio's canonical name (HTTP, HTTP2, GRPC, TCP, TLS...) or AUTO
    #: Kubernetes: a number or the name of a container port (None: the service port).
    #: ServiceEntry: ``targetPort`` (None: the service port, unless an endpoint maps it).
    target_port: int | str | None = None

    @property
    def is_http(self) -> bool:
        return is_http(self.protocol)

    @property
    def is_tcp(self) -> bool:
        return is_tcp(self.protocol)


@dataclass(frozen=True, slots=True, eq=False)
class Service:
    """A host the mesh routes to: a Kubernetes Service or one host of a ServiceEntry."""

    hostname: str  # reviews.default.svc.cluster.local, or a ServiceEntry host
    namespace: str
    name: str  # the Service / ServiceEntry name
    kind: Literal["Service", "ServiceEntry"]
    ports: tuple[ServicePort, ...]
    origin: str  # "Service default/reviews bookinfo.yaml:12"
    cluster_ip: str | None = None  # spec.clusterIP; None: none known yet (or headless)
    addresses: tuple[str, ...] = ()  # every VIP: clusterIPs, ServiceEntry addresses
    #: Labels a workload must carry to back the service; None: the service selects nothing
    #: (Kubernetes Service without selector, ServiceEntry without workloadSelector).
    selector: Mapping[str, str] | None = None
    resolution: Resolution = "EDS"
    location: Literal["MESH_INTERNAL", "MESH_EXTERNAL"] = "MESH_INTERNAL"
    export_to: frozenset[str] = frozenset({"*"})
    headless: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.hostname)

    def port(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.port == number:
                return p
        return None

    def visible_to(self, namespace: str) -> bool:
        return "*" in self.export_to or namespace in self.export_to

    def __repr__(self) -> str:
        return f"<Service {self.hostname} ({self.kind} {self.namespace}/{self.name})>"


@dataclass(frozen=True, slots=True, eq=False)
class Workload:
    """Something that runs and can back services: a Pod or a WorkloadEntry."""

    kind: Literal["Pod", "WorkloadEntry"]
    namespace: str
    name: str
    address: str
    labels: Mapping[str, str]
    #: Pods: container port name -> number; WorkloadEntry: its ``ports`` (service port name ->
    #: number).
    ports: Mapping[str, int]
    service_account: str
    health: Health
    locality: str | None
    weight: int
    origin: str

    def __repr__(self) -> str:
        return f"<Workload {self.kind} {self.namespace}/{self.name} {self.address}>"


@dataclass(frozen=True, slots=True, eq=False)
class Endpoint:
    """One address:port behind a service port."""

    address: str
    port: int
    labels: Mapping[str, str]
    health: Health = "HEALTHY"
    locality: str | None = None  # "region/zone/subzone"
    weight: int = 1
    service_account: str = "default"
    workload: str = ""  # "Pod default/reviews-v1-abc", "WorkloadEntry ...", "ServiceEntry ..."

    def __repr__(self) -> str:
        return f"<Endpoint {self.address}:{self.port} {self.health} {self.workload}>"
