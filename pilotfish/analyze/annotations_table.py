"""Istio's resource annotations: where each applies, its feature status, whether deprecated.

Facts from Istio's annotation registry (``istio.io/api/annotation``). ``Any`` means any kind.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AnnotationInfo:
    name: str
    status: str  # Alpha, Beta, Stable
    resources: tuple[str, ...]
    deprecated: bool = False


def _a(name: str, status: str, *resources: str, deprecated: bool = False) -> AnnotationInfo:
    return AnnotationInfo(name, status, resources or ("Pod",), deprecated)


ANNOTATIONS: dict[str, AnnotationInfo] = {
    a.name: a
    for a in (
        _a("alpha.istio.io/canonical-serviceaccounts", "Alpha", "Service", deprecated=True),
        _a("alpha.istio.io/identity", "Alpha", "Pod", deprecated=True),
        _a("alpha.istio.io/kubernetes-serviceaccounts", "Alpha", "Service", deprecated=True),
        _a("ambient.istio.io/bypass-inbound-capture", "Alpha", "Pod"),
        _a("ambient.istio.io/dns-capture", "Beta", "Pod"),
        _a("ambient.istio.io/redirection", "Beta", "Pod"),
        _a("galley.istio.io/analyze-suppress", "Alpha", "Any"),
        _a("gateway.istio.io/controller-version", "Alpha", "Any"),
        _a("gateway.istio.io/service-account", "Alpha", "Any"),
        _a("gateway.istio.io/name-override", "Alpha", "Any"),
        _a("inject.istio.io/templates", "Alpha", "Pod"),
        _a("install.operator.istio.io/chart-owner", "Alpha", "Any"),
        _a("install.operator.istio.io/owner-generation", "Alpha", "Any"),
        _a("install.operator.istio.io/version", "Alpha", "Any"),
        _a("istio.io/dry-run", "Alpha", "AuthorizationPolicy"),
        _a("istio.io/rev", "Alpha", "Pod"),
        _a("kubernetes.io/ingress.class", "Stable", "Ingress"),
        _a("networking.istio.io/exportTo", "Alpha", "Service"),
        _a("networking.istio.io/traffic-distribution", "Alpha", "Service"),
        _a("networking.istio.io/address-type", "Alpha", "Any"),
        _a("networking.istio.io/service-type", "Alpha", "Any"),
        _a("prometheus.istio.io/merge-metrics", "Alpha", "Pod"),
        _a("proxy.istio.io/config", "Beta", "Pod"),
        _a("proxy.istio.io/overrides", "Alpha", "Pod"),
        _a("readiness.status.sidecar.istio.io/applicationPorts", "Alpha", "Pod"),
        _a("readiness.status.sidecar.istio.io/failureThreshold", "Alpha", "Pod"),
        _a("readiness.status.sidecar.istio.io/initialDelaySeconds", "Alpha", "Pod"),
        _a("readiness.status.sidecar.istio.io/periodSeconds", "Alpha", "Pod"),
        _a("sidecar.istio.io/agentLogLevel", "Alpha", "Pod"),
        _a("sidecar.istio.io/bootstrapOverride", "Alpha", "Pod"),
        _a("sidecar.istio.io/componentLogLevel", "Alpha", "Pod"),
        _a("sidecar.istio.io/controlPlaneAuthPolicy", "Alpha", "Pod", deprecated=True),
        _a("sidecar.istio.io/discoveryAddress", "Alpha", "Pod", deprecated=True),
        _a("sidecar.istio.io/enableCoreDump", "Alpha", "Pod"),
        _a("sidecar.istio.io/extraStatTags", "Alpha", "Pod"),
        _a("sidecar.istio.io/inject", "Beta", "Pod", deprecated=True),
        _a("sidecar.istio.io/interceptionMode", "Alpha", "Pod"),
        _a("sidecar.istio.io/logLevel", "Alpha", "Pod"),
        _a("sidecar.istio.io/nativeSidecar", "Alpha", "Pod"),
        _a("sidecar.istio.io/proxyCPU", "Alpha", "Pod"),
        _a("sidecar.istio.io/proxyCPULimit", "Alpha", "Pod"),
        _a("sidecar.istio.io/proxyImage", "Alpha", "Pod"),
        _a("sidecar.istio.io/proxyImageType", "Alpha", "Pod"),
        _a("sidecar.istio.io/proxyMemory", "Alpha", "Pod"),
        _a("sidecar.istio.io/proxyMemoryLimit", "Alpha", "Pod"),
        _a("sidecar.istio.io/rewriteAppHTTPProbers", "Alpha", "Pod"),
        _a("sidecar.istio.io/statsCompression", "Alpha", "Pod"),
        _a("sidecar.istio.io/statsFlushInterval", "Alpha", "Pod"),
        _a("sidecar.istio.io/statsHistogramBuckets", "Alpha", "Pod"),
        _a("sidecar.istio.io/statsInclusionPrefixes", "Alpha", "Pod", deprecated=True),
        _a("sidecar.istio.io/statsInclusionRegexps", "Alpha", "Pod", deprecated=True),
        _a("sidecar.istio.io/statsInclusionSuffixes", "Alpha", "Pod", deprecated=True),
        _a("sidecar.istio.io/status", "Alpha", "Pod"),
        _a("sidecar.istio.io/userVolume", "Alpha", "Pod"),
        _a("sidecar.istio.io/userVolumeMount", "Alpha", "Pod"),
        _a("status.sidecar.istio.io/port", "Alpha", "Pod"),
        _a("topology.istio.io/controlPlaneClusters", "Alpha", "Any"),
        _a("traffic.istio.io/nodeSelector", "Alpha", "Service"),
        _a("traffic.sidecar.istio.io/excludeInboundPorts", "Alpha", "Pod"),
        _a("traffic.sidecar.istio.io/excludeInterfaces", "Alpha", "Pod"),
        _a("traffic.sidecar.istio.io/excludeOutboundIPRanges", "Alpha", "Pod"),
        _a("traffic.sidecar.istio.io/excludeOutboundPorts", "Alpha", "Pod"),
        _a("traffic.sidecar.istio.io/includeInboundPorts", "Alpha", "Pod"),
        _a("traffic.sidecar.istio.io/includeOutboundIPRanges", "Alpha", "Pod"),
        _a("traffic.sidecar.istio.io/includeOutboundPorts", "Alpha", "Pod"),
        _a("traffic.sidecar.istio.io/kubevirtInterfaces", "Alpha", "Pod"),
    )
}

# Set by Istio's own controllers, never by users: not reported.
SET_BY_ISTIO = frozenset(
    {
        "istio.io/rev",
        "ambient.istio.io/redirection",
        "gateway.istio.io/controller-version",
        "sidecar.istio.io/status",
        "proxy.istio.io/overrides",
    }
)

# Written on pods by the CNI plugin / injector (pods with the ``istio-validation`` init
# container): their presence says nothing about the user's intent.
SET_BY_CNI = frozenset(
    {
        "sidecar.istio.io/interceptionMode",
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "traffic.sidecar.istio.io/excludeInterfaces",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "traffic.sidecar.istio.io/includeInboundPorts",
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "traffic.sidecar.istio.io/includeOutboundPorts",
        "traffic.sidecar.istio.io/kubevirtInterfaces",
    }
)

# Extra words in the deprecation message.
DEPRECATION_NOTES = {
    "sidecar.istio.io/inject": ' in favor of the "sidecar.istio.io/inject" label',
}
