"""Istio's analysis message types: code, level and message template.

The codes, levels and templates are Istio's (``pkg/config/analysis/msg/messages.yaml``), so that
``pilotfish analyze`` prints the same lines ``istioctl analyze`` does. Templates use Go's
``fmt`` verbs (``%s``, ``%v``, ``%q``, ``%d``, ``%t``); :func:`go_format` renders them the way Go
would for the values analyzers pass (strings, ints, bools and lists).

Two codes come from older Istio releases and are kept because Pilotfish still checks what
they describe: ``IST0113`` (MTLSPolicyConflict) and ``IST0122`` (InvalidRegexp).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Level", "MessageType", "MESSAGES", "BY_CODE", "go_format", "m"]


class Level(Enum):
    """Message severity, worst first in sort order (as istioctl sorts)."""

    ERROR = ("Error", 0, 3)
    WARNING = ("Warning", 1, 2)
    INFO = ("Info", 2, 1)

    def __init__(self, label: str, sort_order: int, severity: int):
        self.label = label
        self.sort_order = sort_order
        self.severity = severity

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, text: str) -> Level:
        for lv in cls:
            if lv.label.lower() == str(text).strip().lower():
                return lv
        raise ValueError(f"unknown level {text!r}; valid levels: Error, Warning, Info")

    def at_least(self, other: Level) -> bool:
        """True when this level is as bad as ``other`` or worse."""
        return self.severity >= other.severity


@dataclass(frozen=True, slots=True)
class MessageType:
    name: str
    code: str
    level: Level
    template: str

    def format(self, params: Iterable[Any]) -> str:
        return go_format(self.template, tuple(params))


def _go_quote(s: str) -> str:
    # Go's %q: a double-quoted string with Go escapes; for printable text JSON's escaping agrees.
    return json.dumps(s, ensure_ascii=False)


def _go_value(v: Any, verb: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "<nil>"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_go_value(x, verb) for x in v) + "]"
    if verb == "q":
        return _go_quote(str(v)) if not isinstance(v, int) else f"'{chr(v)}'"
    return str(v)


def go_format(template: str, params: tuple[Any, ...]) -> str:
    """Render a Go ``fmt.Sprintf`` template with the subset of verbs Istio's messages use."""
    out: list[str] = []
    i = 0
    n = len(template)
    arg = 0
    while i < n:
        c = template[i]
        if c != "%" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        verb = template[i + 1]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        if arg >= len(params):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_go_value(params[arg], verb))
        arg += 1
    return "".join(out)


def _t(name: str, code: str, level: str, template: str) -> MessageType:
    return MessageType(name, code, Level.parse(level), template)


MESSAGES: dict[str, MessageType] = {
    t.name: t
    for t in (
        _t("InternalError", "IST0001", "Error", "Internal error: %v"),
        _t("Deprecated", "IST0002", "Warning", "Deprecated: %s"),
        _t("ReferencedResourceNotFound", "IST0101", "Error", "Referenced %s not found: %q"),
        _t(
            "NamespaceNotInjected",
            "IST0102",
            "Info",
            "The namespace is not enabled for Istio injection. Run 'kubectl label "
            "namespace %s istio-injection=enabled' to enable it, or 'kubectl label "
            "namespace %s istio-injection=disabled' to explicitly mark it as not "
            "needing injection.",
        ),
        _t(
            "PodMissingProxy",
            "IST0103",
            "Warning",
            "The pod %s is missing the Istio proxy. This can often be resolved by "
            "restarting or redeploying the workload.",
        ),
        _t("SchemaValidationError", "IST0106", "Error", "Schema validation error: %v"),
        _t(
            "MisplacedAnnotation",
            "IST0107",
            "Warning",
            "Misplaced annotation: %s can only be applied to %s",
        ),
        _t("UnknownAnnotation", "IST0108", "Warning", "Unknown annotation: %s"),
        _t(
            "ConflictingMeshGatewayVirtualServiceHosts",
            "IST0109",
            "Error",
            "The VirtualServices %s associated with mesh gateway define the same "
            "host %s which can lead to undefined behavior. This can be fixed by "
            "merging the conflicting VirtualServices into a single resource.",
        ),
        _t(
            "ConflictingSidecarWorkloadSelectors",
            "IST0110",
            "Error",
            "The Sidecars %v in namespace %q select the same workload pod %q, which "
            "can lead to undefined behavior.",
        ),
        _t(
            "MultipleSidecarsWithoutWorkloadSelectors",
            "IST0111",
            "Error",
            "The Sidecars %v in namespace %q have no workload selector, which can "
            "lead to undefined behavior.",
        ),
        _t(
            "VirtualServiceDestinationPortSelectorRequired",
            "IST0112",
            "Error",
            "This VirtualService routes to a service %q that exposes multiple ports "
            "%v. Specifying a port in the destination is required to disambiguate.",
        ),
        _t(
            "DeploymentAssociatedToMultipleServices",
            "IST0116",
            "Warning",
            "This deployment %s is associated with multiple services using port %d "
            "but different protocols: %v",
        ),
        _t(
            "PortNameIsNotUnderNamingConvention",
            "IST0118",
            "Info",
            "Port name %s (port: %d, targetPort: %s) doesn't follow the naming "
            "convention of Istio port.",
        ),
        _t(
            "NamespaceMultipleInjectionLabels",
            "IST0123",
            "Warning",
            "The namespace has more than one type of injection labels %v, which may "
            "lead to undefined behavior. Make sure only one injection label exists.",
        ),
        _t("InvalidAnnotation", "IST0125", "Warning", "Invalid annotation %s: %s"),
        _t(
            "UnknownMeshNetworksServiceRegistry",
            "IST0126",
            "Error",
            "Unknown service registry %s in network %s",
        ),
        _t(
            "NoMatchingWorkloadsFound",
            "IST0127",
            "Warning",
            "No matching workloads for this resource with the following labels: %s",
        ),
        _t(
            "NoServerCertificateVerificationDestinationLevel",
            "IST0128",
            "Warning",
            "DestinationRule %s in namespace %s has TLS mode set to %s but no "
            "caCertificates are set to validate server identity for host: %s",
        ),
        _t(
            "NoServerCertificateVerificationPortLevel",
            "IST0129",
            "Warning",
            "DestinationRule %s in namespace %s has TLS mode set to %s but no "
            "caCertificates are set to validate server identity for host: %s at "
            "port %s",
        ),
        _t(
            "VirtualServiceUnreachableRule",
            "IST0130",
            "Warning",
            "VirtualService rule %v not used (%s).",
        ),
        _t(
            "VirtualServiceIneffectiveMatch",
            "IST0131",
            "Info",
            "VirtualService rule %v match %v is not used (duplicate/overlapping match in rule %v).",
        ),
        _t(
            "VirtualServiceHostNotFoundInGateway",
            "IST0132",
            "Warning",
            "one or more host %v defined in VirtualService %s not found in Gateway %s.",
        ),
        _t("SchemaWarning", "IST0133", "Warning", "Schema validation warning: %v"),
        _t(
            "ServiceEntryAddressesRequired",
            "IST0134",
            "Warning",
            "ServiceEntry addresses are required for this protocol.",
        ),
        _t(
            "DeprecatedAnnotation",
            "IST0135",
            "Info",
            "Annotation %q has been deprecated%s and may not work in future Istio versions.",
        ),
        _t(
            "AlphaAnnotation",
            "IST0136",
            "Info",
            "Annotation %q is part of an alpha-phase feature and may be incompletely supported.",
        ),
        _t(
            "DeploymentConflictingPorts",
            "IST0137",
            "Warning",
            "This deployment %s is associated with multiple services %v using "
            "targetPort %q but different ports: %v.",
        ),
        _t(
            "GatewayDuplicateCertificate",
            "IST0138",
            "Warning",
            "Duplicate certificate in multiple gateways %v may cause 404s if "
            "clients re-use HTTP2 connections.",
        ),
        _t("InvalidWebhook", "IST0139", "Error", "%v"),
        _t(
            "IngressRouteRulesNotAffected",
            "IST0140",
            "Warning",
            "Subset in virtual service %s has no effect on ingress gateway %s requests",
        ),
        _t(
            "InsufficientPermissions",
            "IST0141",
            "Error",
            "Missing required permission to create resource %v (%v)",
        ),
        _t(
            "UnsupportedKubernetesVersion",
            "IST0142",
            "Error",
            "The Kubernetes Version %q is lower than the minimum version: %v",
        ),
        _t(
            "LocalhostListener",
            "IST0143",
            "Error",
            "Port %v is exposed in a Service but listens on localhost. It will not "
            "be exposed to other pods.",
        ),
        _t(
            "InvalidApplicationUID",
            "IST0144",
            "Warning",
            "User ID (UID) 1337 is reserved for the sidecar proxy.",
        ),
        _t(
            "ConflictingGateways",
            "IST0145",
            "Error",
            "Conflict with gateways %s (workload selector %s, port %s, hosts %v).",
        ),
        _t(
            "ImageAutoWithoutInjectionWarning",
            "IST0146",
            "Warning",
            "%s %s contains `image: auto` but does not match any Istio injection "
            "webhook selectors.",
        ),
        _t(
            "ImageAutoWithoutInjectionError",
            "IST0147",
            "Error",
            "%s %s contains `image: auto` but does not match any Istio injection "
            "webhook selectors.",
        ),
        _t(
            "NamespaceInjectionEnabledByDefault",
            "IST0148",
            "Info",
            "is enabled for Istio injection, as Istio is installed with "
            "enableNamespacesByDefault as true.",
        ),
        _t(
            "JwtClaimBasedRoutingWithoutRequestAuthN",
            "IST0149",
            "Error",
            "The virtual service uses the JWT claim based routing (key: %s) but "
            "found no request authentication for the gateway (%s) pod (%s). The "
            "request authentication must first be applied for the gateway pods to "
            "validate the JWT token and make the claims available for routing.",
        ),
        _t(
            "ExternalNameServiceTypeInvalidPortName",
            "IST0150",
            "Warning",
            "Port name for ExternalName service is invalid. Proxy may prevent tcp "
            "named ports and unmatched traffic for ports serving TCP protocol from "
            "being forwarded correctly",
        ),
        _t(
            "EnvoyFilterUsesRelativeOperation",
            "IST0151",
            "Warning",
            "This EnvoyFilter does not have a priority and has a relative patch "
            "operation set which can cause the EnvoyFilter not to be applied. Using "
            "the INSERT_FIRST of ADD option or setting the priority may help in "
            "ensuring the EnvoyFilter is applied correctly.",
        ),
        _t(
            "EnvoyFilterUsesReplaceOperationIncorrectly",
            "IST0152",
            "Error",
            "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.",
        ),
        _t(
            "EnvoyFilterUsesAddOperationIncorrectly",
            "IST0153",
            "Error",
            "The ADD operation will be ignored when applyTo is set to "
            "ROUTE_CONFIGURATION, or HTTP_ROUTE.",
        ),
        _t(
            "EnvoyFilterUsesRemoveOperationIncorrectly",
            "IST0154",
            "Error",
            "The REMOVE operation will be ignored when applyTo is set to "
            "ROUTE_CONFIGURATION, or HTTP_ROUTE.",
        ),
        _t(
            "EnvoyFilterUsesRelativeOperationWithProxyVersion",
            "IST0155",
            "Warning",
            "This EnvoyFilter does not have a priority and has a relative patch "
            "operation (NSTERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and "
            "proxyVersion set which can cause the EnvoyFilter not to be applied "
            "during an upgrade. Using the INSERT_FIRST or ADD option or setting the "
            "priority may help in ensuring the EnvoyFilter is applied correctly.",
        ),
        _t(
            "UnsupportedGatewayAPIVersion",
            "IST0156",
            "Error",
            "The Gateway API CRD version %v is lower than the minimum version: %v",
        ),
        _t(
            "InvalidTelemetryProvider",
            "IST0157",
            "Warning",
            "The Telemetry %v in namespace %q with empty providers will be ignored.",
        ),
        _t(
            "PodsIstioProxyImageMismatchInNamespace",
            "IST0158",
            "Warning",
            "The Istio proxy images of the pods running in the namespace do not "
            "match the image defined in the injection configuration (pod names: "
            "%v). This often happens after upgrading the Istio control-plane and "
            "can be fixed by redeploying the pods.",
        ),
        _t(
            "ConflictingTelemetryWorkloadSelectors",
            "IST0159",
            "Error",
            "The Telemetries %v in namespace %q select the same workload pod %q, "
            "which can lead to undefined behavior.",
        ),
        _t(
            "MultipleTelemetriesWithoutWorkloadSelectors",
            "IST0160",
            "Error",
            "The Telemetries %v in namespace %q have no workload selector, which "
            "can lead to undefined behavior.",
        ),
        _t(
            "InvalidGatewayCredential",
            "IST0161",
            "Error",
            "The credential referenced by the Gateway %s in namespace %s is "
            "invalid, which can cause the traffic not to work as expected.",
        ),
        _t(
            "GatewayPortNotDefinedOnService",
            "IST0162",
            "Warning",
            "The gateway is listening on a target port (port %d) that is not "
            "defined in the Service associated with its workload instances (Pod "
            "selector %s). If you need to access the gateway port through the "
            "gateway Service, it will not be available.",
        ),
        _t(
            "InvalidExternalControlPlaneConfig",
            "IST0163",
            "Warning",
            "The hostname (%s) that was provided for the webhook (%s) to reach the "
            "ingress gateway on the external control plane cluster %s. Traffic may "
            "not flow properly.",
        ),
        _t(
            "ExternalControlPlaneAddressIsNotAHostname",
            "IST0164",
            "Info",
            "The address (%s) that was provided for the webhook (%s) to reach the "
            "ingress gateway on the external control plane cluster is an IP "
            "address. This is not recommended for a production environment.",
        ),
        _t(
            "ReferencedInternalGateway",
            "IST0165",
            "Warning",
            "Gateway reference in VirtualService %s is to an "
            "implementation-generated internal Gateway: %s.",
        ),
        _t(
            "IneffectiveSelector",
            "IST0166",
            "Warning",
            "Ineffective selector on Kubernetes Gateway %s. Use the TargetRef field instead.",
        ),
        _t("IneffectivePolicy", "IST0167", "Warning", "The policy has no impact: %s."),
        _t(
            "UnknownUpgradeCompatibility",
            "IST0168",
            "Warning",
            "The configuration %q changed in release %s, but compatibility cannot "
            "be automatically detected: %s. Or, install with `--set "
            "compatibilityVersion=%s` to retain the old default.",
        ),
        _t(
            "UpdateIncompatibility",
            "IST0169",
            "Warning",
            "The configuration %q changed in release %s: %s. Or, install with "
            "`--set compatibilityVersion=%s` to retain the old default.",
        ),
        _t(
            "MultiClusterInconsistentService",
            "IST0170",
            "Warning",
            "The service %v in namespace %q is inconsistent across clusters %q, "
            "which can lead to undefined behaviors. The inconsistent behaviors are: "
            "%v.",
        ),
        _t(
            "NegativeConditionStatus",
            "IST0171",
            "Warning",
            "A condition with a negative status is present: type=%s, reason=%s, message=%s.",
        ),
        _t(
            "FutureUnsupportedGatewayAPIVersion",
            "IST0172",
            "Warning",
            "The Gateway API CRD version %v is lower than the minimum version: %v",
        ),
        _t(
            "DestinationRuleSubsetNotSelectPods",
            "IST0173",
            "Error",
            "The Subset %s defined in the DestinationRule does not select any pods. "
            "Which may lead to 503 UH (NoHealthyUpstream).",
        ),
        _t(
            "UnknownDestinationRuleHost",
            "IST0174",
            "Warning",
            "The host %s defined in the DestinationRule does not match any services in the mesh.",
        ),
        _t(
            "JwksUriFetchUnrestricted",
            "IST0175",
            "Warning",
            "BLOCKED_CIDRS_IN_JWKS_URIS is not configured but %d "
            "RequestAuthentication resource(s) exist (%s). Consider configuring it "
            "to restrict JWKS URI fetches to trusted networks.",
        ),
        _t(
            "GatewayAPICRDVersionBelowMinimum",
            "IST0176",
            "Warning",
            "Gateway API CRD %q is at version %q but Istio requires at least %q; "
            "resources of this kind will not be processed. Upgrade the Gateway API "
            "CRDs to satisfy the minimum version.",
        ),
        _t(
            "ConflictingServiceEntryProtocol",
            "IST0177",
            "Warning",
            "Multiple ServiceEntries (%s) define the same host %q and port %d with "
            "conflicting protocols (%s).",
        ),
        # From older Istio releases (no longer in messages.yaml); Pilotfish keeps the checks.
        _t(
            "MTLSPolicyConflict",
            "IST0113",
            "Error",
            "A DestinationRule and Policy are in conflict with regards to mTLS for host %s. "
            "The DestinationRule %q specifies that mTLS must be %t but the Policy object %q "
            "specifies %s.",
        ),
        _t("InvalidRegexp", "IST0122", "Warning", "Field %q regular expression invalid: %q (%s)"),
    )
}

BY_CODE: dict[str, MessageType] = {t.code: t for t in MESSAGES.values()}

# Codes that are Istio's current ones (checked against Istio's table by the tests); the others
# above are kept from older releases.
LEGACY_CODES = frozenset({"IST0113", "IST0122"})


def m(name: str) -> MessageType:
    """The message type called ``name`` (Istio's message name, e.g. ``ReferencedResourceNotFound``)."""
    return MESSAGES[name]
