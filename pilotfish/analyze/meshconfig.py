"""Mesh-wide settings the analyzers consult, with Istio's defaults for the fields they read.

A mesh config given by the user (``--meshConfigFile``, Istio's ``MeshConfig`` YAML) is merged
over these defaults: maps merge key by key, everything else replaces.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

DEFAULT_MESH_CONFIG: dict[str, Any] = {
    "rootNamespace": "istio-system",
    "trustDomain": "cluster.local",
    "trustDomainAliases": [],
    "enableAutoMtls": True,
    "ingressControllerMode": "STRICT",
    "ingressService": "istio-ingressgateway",
    "ingressClass": "istio",
    "defaultConfig": {"proxyMetadata": {}},
    # Istio always knows these telemetry providers by name.
    "extensionProviders": [
        {"name": "prometheus", "prometheus": {}},
        {"name": "stackdriver", "stackdriver": {}},
        {"name": "envoy", "envoyFileAccessLog": {"path": "/dev/stdout"}},
    ],
    "defaultProviders": {"metrics": ["prometheus"]},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif k == "extensionProviders" and isinstance(v, list):
            names = {p.get("name") for p in v if isinstance(p, dict)}
            out[k] = list(v) + [p for p in base.get(k, []) if p.get("name") not in names]
        else:
            out[k] = v
    return out


def mesh_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Istio's defaults with ``overrides`` merged in."""
    base = copy.deepcopy(DEFAULT_MESH_CONFIG)
    if not overrides:
        return base
    return _merge(base, overrides)


def load_mesh_config(path: str) -> dict[str, Any]:
    """Read a MeshConfig YAML file (the ``mesh`` key of Istio's ``istio`` ConfigMap)."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=_Loader)  # noqa: S506 - a safe loader
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: mesh config is not a mapping")
    # Accept a ConfigMap holding the mesh config too.
    if (
        doc.get("kind") == "ConfigMap"
        and isinstance(doc.get("data"), dict)
        and "mesh" in doc["data"]
    ):
        inner = yaml.load(doc["data"]["mesh"], Loader=_Loader) or {}  # noqa: S506
        doc = inner if isinstance(inner, dict) else {}
    return mesh_config(doc)
