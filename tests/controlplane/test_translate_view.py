"""ConfigView: typed objects by kind with their origins, Istio's order, exportTo."""

from __future__ import annotations

import textwrap

import pytest

from pilotfish.api import parse
from pilotfish.api.loader import load_text
from pilotfish.config import MemoryBackend, Store
from pilotfish.controlplane.view import ConfigView

DOCS = textwrap.dedent("""
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: b, creationTimestamp: "2024-01-01T00:00:00Z"}
    spec: {hosts: [x], exportTo: [".", "prod"]}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: a, namespace: team, creationTimestamp: "2024-01-01T00:00:00Z"}
    spec: {hosts: [x], exportTo: ["~"]}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: z, creationTimestamp: "2023-01-01T00:00:00Z"}
    spec: {hosts: [x]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: s, annotations: {networking.istio.io/exportTo: "a, b"}}
    spec: {ports: [{port: 80}]}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: prod}
    ---
    apiVersion: example.com/v1
    kind: Unknown
    metadata: {name: skipped}
""")


def test_build_from_resources_order_origin_and_export_to():
    view = ConfigView.build(load_text(DOCS, "mesh.yaml"))
    assert view.kinds == ["Namespace", "Service", "VirtualService"]
    vss = view.entries("VirtualService")
    # Istio's order: creation time, then name, then namespace
    assert [e.key for e in vss] == ["default/z", "team/a", "default/b"]
    assert vss[0].origin == "VirtualService default/z mesh.yaml:12"
    assert view.get("Namespace", "", "prod").origin == "Namespace prod mesh.yaml:22"
    b = view.get("VirtualService", "default", "b")
    assert view.export_to(b) == frozenset({"default", "prod"})
    assert view.visible(b, "prod") and not view.visible(b, "other")
    assert view.export_to(view.get("VirtualService", "team", "a")) == frozenset()
    assert view.export_to(view.get("VirtualService", "default", "z")) == frozenset({"*"})
    assert view.export_to(view.get("Service", "default", "s")) == frozenset({"a", "b"})
    assert view.root_namespace == "istio-system" and view.domain_suffix == "cluster.local"


STORED = textwrap.dedent("""
    apiVersion: v1
    kind: Service
    metadata: {name: s}
    spec: {ports: [{port: 80, name: http}]}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: a, namespace: team}
    spec: {hosts: [x], http: [{route: [{destination: {host: x}}]}]}
""").lstrip("\n")


def test_build_from_store_typed_objects_and_tuples():
    ticks = iter(["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"])
    store = Store(MemoryBackend(), clock=lambda: next(ticks))
    store.apply(load_text(STORED, "mesh.yaml"))
    view = ConfigView.build(store.list(), root_namespace="mesh-root")
    assert view.root_namespace == "mesh-root"
    e = view.get("VirtualService", "team", "a")
    assert e.origin == "VirtualService team/a mesh.yaml:6" and e.created.startswith("2026-01-01T")
    assert view.get("Service", "default", "s").origin == "Service default/s mesh.yaml:1"
    # typed objects without origin, or with (file, line)
    (res,) = load_text("apiVersion: v1\nkind: Service\nmetadata: {name: t}\nspec: {}\n", "t.yaml")
    obj = parse(res)
    v2 = ConfigView.build([obj, (parse(load_text(DOCS, "m.yaml")[0]), "vs.yaml", 3)])
    assert v2.get("Service", "default", "t").origin == "Service default/t"
    assert v2.get("VirtualService", "default", "b").origin == "VirtualService default/b vs.yaml:3"


def test_later_duplicate_wins_and_errors_name_the_file():
    docs = load_text(DOCS, "one.yaml") + load_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b}\nspec: {hosts: [y]}\n",
        "two.yaml")
    view = ConfigView.build(docs)
    b = view.get("VirtualService", "default", "b")
    assert b.obj.spec.hosts == ["y"] and b.file == "two.yaml"
    assert len(view.entries("VirtualService")) == 3
    bad = load_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n"
                    "spec: {hosts: 3}\n", "bad.yaml")
    with pytest.raises(ValueError, match="bad.yaml"):
        ConfigView.build(bad)


def test_memo_is_per_view():
    view = ConfigView.build(load_text(DOCS, "mesh.yaml"))
    calls = []
    assert view.memo("k", lambda: calls.append(1) or 42) == 42
    assert view.memo("k", lambda: calls.append(1) or 43) == 42
    assert calls == [1]
