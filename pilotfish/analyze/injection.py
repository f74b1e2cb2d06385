"""injection.Analyzer: namespaces that are neither enabled nor disabled for sidecar injection
(IST0102, or IST0148 when the injector enables them by default), pods of injected namespaces
that run without the proxy (IST0103), and namespaces with conflicting injection labels
(IST0123)."""

from __future__ import annotations

import json

from .core import Context, analyzer
from .messages import m
from .util import (
    DATAPLANE_MODE_LABEL,
    INJECTION_LABEL,
    REVISION_LABEL,
    SIDECAR_INJECT,
    SYSTEM_NAMESPACES,
    as_dict,
    as_str,
    has_istio_proxy,
)

INJECTOR_CONFIGMAP = "istio-sidecar-injector"


def _enabled_by_default(ctx: Context, revision: str) -> bool:
    """``sidecarInjectorWebhook.enableNamespacesByDefault`` from the injector's ConfigMap."""
    name = INJECTOR_CONFIGMAP + (f"-{revision}" if revision and revision != "default" else "")
    for cm in ctx.all("ConfigMap"):
        if cm.name != name:
            continue
        try:
            values = json.loads(as_str(as_dict(cm.data.get("data")).get("values")) or "{}")
        except ValueError:
            return False
        return (
            as_dict(as_dict(values).get("sidecarInjectorWebhook")).get("enableNamespacesByDefault")
            is True
        )
    return False


@analyzer(
    "injection.Analyzer",
    "Checks conditions related to Istio sidecar injection",
    ("IST0102", "IST0103", "IST0123", "IST0148"),
)
def injection(ctx: Context) -> None:
    injected: set[str] = set()
    for nso in ctx.all("Namespace"):
        ns = nso.name
        if ns == ctx.istio_namespace or ns in SYSTEM_NAMESPACES:
            continue
        labels = nso.labels
        has_injection = INJECTION_LABEL in labels
        injection_value = as_str(labels.get(INJECTION_LABEL))
        has_revision = REVISION_LABEL in labels
        found = [f"{INJECTION_LABEL}={injection_value}"] if has_injection else []
        for key in (REVISION_LABEL, DATAPLANE_MODE_LABEL):
            if key in labels and (not has_injection or injection_value == "enabled"):
                found.append(f"{key}={as_str(labels[key])}")
        if len(found) > 1:
            ctx.report(
                m("NamespaceMultipleInjectionLabels"), nso, found, path=("metadata", "labels")
            )
        if labels.get(DATAPLANE_MODE_LABEL) == "ambient":
            continue
        if not injection_value and not has_revision:
            if _enabled_by_default(ctx, ""):
                ctx.report(m("NamespaceInjectionEnabledByDefault"), nso)
            else:
                ctx.report(m("NamespaceNotInjected"), nso, ns, ns, path=("metadata", "name"))
            continue
        if not has_revision and injection_value != "enabled":
            continue  # deliberately not injected
        injected.add(ns)
    for pod in ctx.all("Pod"):
        if pod.synthetic or pod.ns not in injected:
            continue
        inject = as_str(pod.annotations.get(SIDECAR_INJECT))
        if SIDECAR_INJECT in pod.labels:
            inject = as_str(pod.labels[SIDECAR_INJECT])
        if inject.lower() == "false" or pod.spec.get("hostNetwork") is True:
            continue
        if not has_istio_proxy(pod.spec):
            ctx.report(m("PodMissingProxy"), pod, pod.full_name)
