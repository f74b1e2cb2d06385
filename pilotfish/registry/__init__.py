"""The service registry: services, workloads and endpoints (see :mod:`.registry`).

``Registry.build(view)`` turns a :class:`~pilotfish.controlplane.view.ConfigView` into the
services the mesh routes to, with their ports, protocols, addresses and endpoints.
"""

from pilotfish.registry.model import Endpoint, Service, ServicePort, Workload
from pilotfish.registry.protocol import AUTO, is_http, is_tcp, service_port_protocol
from pilotfish.registry.registry import Registry

__all__ = [
    "AUTO",
    "Endpoint",
    "Registry",
    "Service",
    "ServicePort",
    "Workload",
    "is_http",
    "is_tcp",
    "service_port_protocol",
]
