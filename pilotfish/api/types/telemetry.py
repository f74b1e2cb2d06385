"""``telemetry.istio.io`` Telemetry (API versions v1 and v1alpha1 share one schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from pilotfish.api.schema import MinDuration, Model
from pilotfish.api.types.common import PolicyTargetReference, WorkloadSelector
from pilotfish.api.types.meta import TypedObject

_NONEMPTY = Annotated[str, msgspec.Meta(min_length=1)]
WorkloadMode = Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"]


class ProviderRef(Model):
    name: _NONEMPTY


class TracingSelector(Model):
    mode: WorkloadMode = "CLIENT_AND_SERVER"


class LiteralTag(Model):
    value: _NONEMPTY


class EnvironmentTag(Model):
    name: _NONEMPTY
    default_value: str = ""


class RequestHeaderTag(Model):
    name: _NONEMPTY
    default_value: str = ""


class FormatterTag(Model):
    value: _NONEMPTY


class CustomTag(Model):
    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: RequestHeaderTag | None = None
    formatter: FormatterTag | None = None

    _oneofs = (("literal", "environment", "header", "formatter"),)


class Tracing(Model):
    match: TracingSelector | None = None
    providers: list[ProviderRef] = []
    random_sampling_percentage: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    disable_span_reporting: bool | None = None
    custom_tags: dict[str, CustomTag] = {}
    use_request_id_for_trace_sampling: bool | None = None
    enable_istio_tags: bool | None = None
    disable_context_propagation: bool | None = None


Metric = Literal[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
]


class MetricSelector(Model):
    metric: Metric | None = None
    custom_metric: _NONEMPTY | None = None
    mode: WorkloadMode = "CLIENT_AND_SERVER"

    _oneofs = (("metric", "customMetric"),)


class TagOverride(Model):
    operation: Literal["UPSERT", "REMOVE"] = "UPSERT"
    value: str = ""


class MetricsOverrides(Model):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = {}


class Metrics(Model):
    providers: list[ProviderRef] = []
    overrides: list[MetricsOverrides] = []
    reporting_interval: MinDuration | None = None


class AccessLoggingSelector(Model):
    mode: WorkloadMode = "CLIENT_AND_SERVER"


class AccessLoggingFilter(Model):
    expression: str = ""


class AccessLogging(Model):
    match: AccessLoggingSelector | None = None
    providers: list[ProviderRef] = []
    disabled: bool | None = None
    filter: AccessLoggingFilter | None = None


class TelemetrySpec(Model):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: Annotated[list[PolicyTargetReference], msgspec.Meta(max_length=16)] = []
    tracing: list[Tracing] = []
    metrics: list[Metrics] = []
    access_logging: list[AccessLogging] = []


class Telemetry(TypedObject):
    spec: TelemetrySpec = msgspec.field(default_factory=TelemetrySpec)
    status: Any = None
