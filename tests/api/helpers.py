"""Small builders for validation tests."""

from __future__ import annotations

import textwrap

import yaml

from pilotfish.api import validate
from pilotfish.api.loader import load_text


def doc(api_version: str, kind: str, spec: dict | None = None, name: str = "x", namespace: str | None = "ns", **top) -> str:
    md = {"name": name}
    if namespace:
        md["namespace"] = namespace
    d = {"apiVersion": api_version, "kind": kind, "metadata": md}
    if spec is not None:
        d["spec"] = spec
    d.update(top)
    return yaml.safe_dump(d, sort_keys=False)


def issues_of(text: str, level: str | None = None) -> list[tuple[str, str]]:
    (res,) = load_text(textwrap.dedent(text), "t.yaml")
    return [(i.path, i.message) for i in validate(res) if level is None or i.level == level]


def errors_of(text: str) -> list[tuple[str, str]]:
    return issues_of(text, "Error")


def warnings_of(text: str) -> list[tuple[str, str]]:
    return issues_of(text, "Warning")


def has(found: list[tuple[str, str]], path: str, fragment: str) -> bool:
    return any(p == path and fragment in m for p, m in found)


def vs(spec: dict, **kw) -> str:
    return doc("networking.istio.io/v1", "VirtualService", spec, **kw)


def dr(spec: dict, **kw) -> str:
    return doc("networking.istio.io/v1", "DestinationRule", spec, **kw)


def gw(spec: dict, **kw) -> str:
    return doc("networking.istio.io/v1", "Gateway", spec, **kw)


def se(spec: dict, **kw) -> str:
    return doc("networking.istio.io/v1", "ServiceEntry", spec, **kw)


def sidecar(spec: dict, **kw) -> str:
    return doc("networking.istio.io/v1", "Sidecar", spec, **kw)


def route(host: str = "r", **kw) -> dict:
    d = {"destination": {"host": host}}
    d.update(kw)
    return d
