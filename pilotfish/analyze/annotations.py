"""annotations.K8sAnalyzer: Istio annotations on Namespaces, Services, Pods and Deployments must
be known (IST0108), on a kind they apply to (IST0107), with a valid value (IST0125); deprecated
ones are flagged (IST0135). annotations.AlphaAnalyzer (not in the default set, as in Istio) flags
annotations of alpha-phase features (IST0136)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

import yaml

from .annotations_table import ANNOTATIONS, DEPRECATION_NOTES, SET_BY_CNI, SET_BY_ISTIO
from .core import Context, Obj, analyzer
from .messages import m
from .util import SIDECAR_INJECT, containers

ANALYZED_KINDS = ("Namespace", "Service", "Pod", "Deployment")
CNI_VALIDATION_CONTAINER = "istio-validation"


def is_istio_annotation(name: str) -> bool:
    """In Istio's domain (``*istio.io/...``), or the one Kubernetes annotation Istio documents."""
    if name == "kubernetes.io/ingress.class":
        return True
    return name.split("/", 1)[0].endswith("istio.io")


# -- value checks ----------------------------------------------------------------------------


def _uint32(v: str) -> None:
    if not v.isdigit() or int(v) > 0xFFFFFFFF:
        raise ValueError(f"{v!r} is not an unsigned 32-bit integer")


def _port(v: str) -> None:
    if not v.isdigit() or not 0 <= int(v) <= 65535:
        raise ValueError(f"{v!r} is not a port number")


def _port_list(v: str) -> None:
    for p in (x.strip() for x in v.split(",")):
        if p:
            _port(p)
            if p == "0":
                raise ValueError("port 0 is not a valid port")


def _port_list_or_wildcard(v: str) -> None:
    if v.strip() != "*":
        _port_list(v)


def _cidr_list(v: str) -> None:
    for c in (x.strip() for x in v.split(",")):
        if c:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"{c!r} is not a CIDR range") from None


def _cidr_list_or_wildcard(v: str) -> None:
    if v.strip() != "*":
        _cidr_list(v)


def _interception_mode(v: str) -> None:
    if v not in ("REDIRECT", "TPROXY", "NONE"):
        raise ValueError(f"{v!r} is not one of REDIRECT, TPROXY, NONE")


def _bool(v: str) -> None:
    if v.lower() not in ("true", "false"):
        raise ValueError(f"{v!r} is not true or false")


def _proxy_config(v: str) -> None:
    try:
        doc = yaml.safe_load(v)
    except yaml.YAMLError as e:
        raise ValueError(f"not YAML: {e}") from None
    if doc is not None and not isinstance(doc, dict):
        raise ValueError("not a ProxyConfig mapping")


VALIDATORS: dict[str, Callable[[str], None]] = {
    "readiness.status.sidecar.istio.io/initialDelaySeconds": _uint32,
    "readiness.status.sidecar.istio.io/periodSeconds": _uint32,
    "readiness.status.sidecar.istio.io/failureThreshold": _uint32,
    "readiness.status.sidecar.istio.io/applicationPorts": _port_list_or_wildcard,
    "status.sidecar.istio.io/port": _port,
    "sidecar.istio.io/interceptionMode": _interception_mode,
    "sidecar.istio.io/rewriteAppHTTPProbers": _bool,
    "sidecar.istio.io/enableCoreDump": _bool,
    "traffic.sidecar.istio.io/includeOutboundIPRanges": _cidr_list_or_wildcard,
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": _cidr_list,
    "traffic.sidecar.istio.io/includeInboundPorts": _port_list_or_wildcard,
    "traffic.sidecar.istio.io/excludeInboundPorts": _port_list,
    "traffic.sidecar.istio.io/includeOutboundPorts": _port_list,
    "traffic.sidecar.istio.io/excludeOutboundPorts": _port_list,
    "proxy.istio.io/config": _proxy_config,
}


def _user_annotations(obj: Obj) -> Iterator[tuple[str, str]]:
    """Istio annotations a user set: without those Istio's own controllers (or the CNI plugin,
    on pods it validated) write."""
    cni = obj.kind == "Pod" and any(
        c.get("name") == CNI_VALIDATION_CONTAINER for c in containers(obj.spec)
    )
    for name, value in obj.annotations.items():
        name = str(name)
        if not is_istio_annotation(name) or name in SET_BY_ISTIO:
            continue
        if cni and name in SET_BY_CNI:
            continue
        yield name, "" if value is None else str(value)


def _objects(ctx: Context) -> Iterator[Obj]:
    for kind in ANALYZED_KINDS:
        for obj in ctx.all(kind):
            if not obj.synthetic:
                yield obj


@analyzer(
    "annotations.K8sAnalyzer",
    "Checks for misplaced and invalid Istio annotations in Kubernetes resources",
    ("IST0107", "IST0108", "IST0125", "IST0135"),
)
def k8s_annotations(ctx: Context) -> None:
    for obj in _objects(ctx):
        for name, value in _user_annotations(obj):
            path = ("metadata", "annotations", name)
            info = ANNOTATIONS.get(name)
            if info is None:
                ctx.report(m("UnknownAnnotation"), obj, name, path=path)
                continue
            if info.deprecated and not (name == SIDECAR_INJECT and SIDECAR_INJECT in obj.labels):
                ctx.report(
                    m("DeprecatedAnnotation"), obj, name, DEPRECATION_NOTES.get(name, ""), path=path
                )
            if "Any" in info.resources:
                continue
            if obj.kind not in info.resources:
                ctx.report(
                    m("MisplacedAnnotation"), obj, name, ", ".join(info.resources), path=path
                )
                continue
            check = VALIDATORS.get(name)
            if check is not None:
                try:
                    check(value)
                except ValueError as e:
                    ctx.report(m("InvalidAnnotation"), obj, name, str(e), path=path)


@analyzer(
    "annotations.AlphaAnalyzer",
    "Checks for alpha Istio annotations in Kubernetes resources",
    ("IST0136",),
    default=False,
)
def alpha_annotations(ctx: Context) -> None:
    for obj in _objects(ctx):
        for name, _value in _user_annotations(obj):
            info = ANNOTATIONS.get(name)
            if info is not None and info.status == "Alpha":
                ctx.report(m("AlphaAnnotation"), obj, name, path=("metadata", "annotations", name))
