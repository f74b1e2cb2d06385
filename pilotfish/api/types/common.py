"""Types shared by several Istio kinds."""

from __future__ import annotations

from typing import Annotated

import msgspec

from pilotfish.api.schema import Model

_LABEL_VALUE = Annotated[str, msgspec.Meta(max_length=63)]


class WorkloadSelector(Model):
    """``selector`` of security and telemetry kinds, ``workloadSelector`` of DestinationRule
    (Istio's ``type.v1beta1.WorkloadSelector``)."""

    match_labels: dict[str, _LABEL_VALUE] = {}


class LabelsSelector(Model):
    """``workloadSelector`` of Sidecar and ServiceEntry (``networking.v1alpha3.WorkloadSelector``)."""

    labels: dict[str, _LABEL_VALUE] = {}


_GROUP = Annotated[
    str,
    msgspec.Meta(
        max_length=253,
        pattern=r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]
_KIND = Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")]
_NAME = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]


class PolicyTargetReference(Model):
    """``targetRef``: a Service, ServiceEntry or Kubernetes Gateway a policy attaches to."""

    kind: _KIND
    name: _NAME
    group: _GROUP = ""
    namespace: str = ""


class Percent(Model):
    """A percentage in [0, 100] with fractions allowed."""

    value: float = 0.0


class PortSelector(Model):
    number: Annotated[int, msgspec.Meta(ge=0, le=4294967295)] = 0


class Destination(Model):
    """Where traffic goes: a host from the registry, optionally a subset and a port."""

    host: str
    subset: str = ""
    port: PortSelector | None = None
