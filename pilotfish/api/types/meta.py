"""Object metadata and the small types shared by Kubernetes and Istio kinds."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from pilotfish.api.schema import Int64, LenientModel, Model


class OwnerReference(LenientModel):
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    """``metadata`` of every object (Kubernetes ``ObjectMeta``)."""

    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    self_link: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: Int64 = 0
    creation_timestamp: str = ""
    deletion_timestamp: str = ""
    deletion_grace_period_seconds: Int64 | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    owner_references: list[OwnerReference] = []
    finalizers: list[str] = []
    managed_fields: list[Any] = []


class LabelSelectorRequirement(Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []


class LabelSelector(Model):
    """Kubernetes ``LabelSelector`` (``matchLabels`` and ``matchExpressions``)."""

    match_labels: dict[str, str] = {}
    match_expressions: list[LabelSelectorRequirement] = []

    def matches(self, labels: dict[str, str]) -> bool:
        for k, v in self.match_labels.items():
            if labels.get(k) != v:
                return False
        for req in self.match_expressions:
            have = req.key in labels
            if req.operator == "In" and (not have or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and have and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not have:
                return False
            if req.operator == "DoesNotExist" and have:
                return False
        return True


class TypedObject(Model):
    """Fields every top-level object has. Kind-specific classes add ``spec`` and friends."""

    api_version: str
    kind: str
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.annotations
