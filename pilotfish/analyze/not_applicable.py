"""Istio analyzers Pilotfish does not have, and why: they check machinery a Pilotfish mesh does
not use (admission webhooks, container images of an injector, Envoy, Kubernetes versions and
CRDs, multicluster control planes)."""

from __future__ import annotations

NOT_APPLICABLE: dict[str, str] = {
    "authn.BlockedCIDRsAnalyzer": (
        "checks the environment of the istiod Deployment (BLOCKED_CIDRS_IN_JWKS_URIS); Pilotfish's "
        "control plane is not istiod and is not configured through a Deployment"
    ),
    "envoyfilter.EnvoyPatchAnalyzer": "Pilotfish's proxy is not Envoy and does not accept EnvoyFilter patches",
    "externalcontrolplane.ExternalControlPlaneAnalyzer": (
        "checks the admission webhooks of an external istiod; Pilotfish has no admission webhooks "
        "and no external control plane"
    ),
    "webhook.Analyzer": "checks Kubernetes admission webhook configurations, which Pilotfish does not use",
    "injection.ImageAnalyzer": (
        "compares the proxy container image of pods with the injector's; Pilotfish's proxy is not a "
        "container image"
    ),
    "injection.ImageAutoAnalyzer": (
        "checks `image: auto` against the injection webhook's selectors; Pilotfish has no injection webhook"
    ),
    "k8sgateway.CRDVersionAnalyzer": "checks installed Gateway API CRD versions; Pilotfish installs no CRDs",
    "k8sgateway.SelectorAnalyzer": (
        "checks policies that select the pods of a Kubernetes Gateway API Gateway; Pilotfish does not "
        "implement the Gateway API"
    ),
    "meshnetworks.MeshNetworksAnalyzer": (
        "checks the service registries of a multicluster meshNetworks config; Pilotfish has one registry"
    ),
    "services.MultiClusterServiceAnalyzer": (
        "compares Services across Kubernetes clusters; Pilotfish has no multicluster mode"
    ),
    "schema.ValidationAnalyzer.EnvoyFilter": "Pilotfish does not accept EnvoyFilter",
    "schema.ValidationAnalyzer.WasmPlugin": "Pilotfish's proxy does not run Wasm plugins",
}
