"""Typed models of the resource kinds Pilotfish reads (``msgspec.Struct``, camelCase names).

One module per API group: :mod:`.k8s` (core and apps), :mod:`.networking`, :mod:`.security`,
:mod:`.telemetry` (Istio) and :mod:`.gatewayapi` (Kubernetes Gateway API). Each top-level class
(``VirtualService``, ``Deployment``...) is a whole object: ``api_version``, ``kind``,
``metadata`` and its kind-specific fields.
"""

from pilotfish.api.types import gatewayapi, k8s, networking, security, telemetry
from pilotfish.api.types.meta import LabelSelector, ObjectMeta, TypedObject

__all__ = [
    "LabelSelector",
    "ObjectMeta",
    "TypedObject",
    "gatewayapi",
    "k8s",
    "networking",
    "security",
    "telemetry",
]
