"""Telemetry, deprecation and condition analyzers; schema validation wiring."""

from __future__ import annotations

import pytest

from pilotfish.analyze import analyze, mesh_config, schema
from pilotfish.api.loader import load_text

from .conftest import pairs, run

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {containers: [{name: web}]}
"""


def telemetry(name: str, spec: str, ns: str = "default") -> str:
    return f"""
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: {name}, namespace: {ns}}}
spec:
{spec}
"""


def test_telemetry_selectors():
    cfg = (
        PODS
        + telemetry("a", "  selector: {matchLabels: {app: web}}")
        + telemetry("b", "  selector: {matchLabels: {app: web}}")
        + telemetry("none", "  selector: {matchLabels: {app: nothing}}")
        + telemetry("ns-1", "  metrics: []")
        + telemetry("ns-2", "  metrics: []")
    )
    assert pairs(run(cfg, "telemetry.SelectorAnalyzer")) == {
        ("IST0159", "Telemetry default/a"): 1,
        ("IST0159", "Telemetry default/b"): 1,
        ("IST0101", "Telemetry default/none"): 1,
    }
    assert pairs(run(cfg, "telemetry.DefaultSelectorAnalyzer")) == {
        ("IST0160", "Telemetry default/ns-1"): 1,
        ("IST0160", "Telemetry default/ns-2"): 1,
    }


def test_telemetry_providers():
    cfg = telemetry(
        "logs",
        "  accessLogging: [{filter: {expression: 'response.code >= 400'}}]",
        ns="istio-system",
    )
    msgs = run(cfg, "telemetry.ProviderAnalyzer")
    assert [m.text for m in msgs] == [
        'The Telemetry logs in namespace "istio-system" with empty providers will be ignored.'
    ]
    mesh = mesh_config({"defaultProviders": {"accessLogging": ["envoy"]}})
    assert run(cfg, "telemetry.ProviderAnalyzer", mesh=mesh) == []
    tracing = telemetry("t", "  tracing: [{providers: [{name: ls}]}]")
    mesh = mesh_config(
        {"extensionProviders": [{"name": "ls", "lightstep": {"service": "x", "port": 8080}}]}
    )
    assert [m.code for m in run(tracing, "telemetry.LightstepAnalyzer", mesh=mesh)] == ["IST0002"]
    assert run(tracing, "telemetry.LightstepAnalyzer") == []


def test_deprecations():
    msgs = run(
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [x]
  http: [{fault: {delay: {percent: 10, fixedDelay: 1s}}, route: [{destination: {host: x}}]}]
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: old, namespace: default}
spec: {}
""",
        "deprecation.DeprecationAnalyzer",
    )
    assert sorted(m.text for m in msgs) == [
        "Deprecated: Custom resource type rbac.istio.io ServiceRole is removed",
        "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
    ]


def test_negative_conditions():
    msgs = run(
        """
apiVersion: v1
kind: Service
metadata: {name: s, namespace: default}
spec: {ports: [{name: http, port: 80}]}
status:
  conditions:
  - {type: istio.io/WaypointBound, status: "False", reason: NoWaypoint, message: not ready}
  - {type: example.com/Synced, status: "False", reason: OutOfSync, message: nope}
""",
        "conditions.ConditionAnalyzer",
    )
    assert [m.text for m in msgs] == [
        "A condition with a negative status is present: type=istio.io/WaypointBound, reason=NoWaypoint, message=not ready."
    ]


BAD_GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{hosts: [a.example.com]}]
"""


class _Issue:
    def __init__(self, level, message, path=None, code=None):
        self.level, self.message, self.path, self.code, self.line = level, message, path, code, None


class _FakeValidation:
    @staticmethod
    def validate(res, default_namespace="default"):
        return [
            _Issue("Error", "port is required", "spec.servers[0]"),
            _Issue("Warning", "host looks odd", "spec.servers[0].hosts[0]"),
            _Issue("Warning", "rule not used", code="VirtualServiceUnreachableRule"),
        ]


def test_schema_analyzer_maps_validation_issues(monkeypatch):
    monkeypatch.setattr(schema, "_validation", _FakeValidation)
    result = analyze(load_text(BAD_GATEWAY, "gw.yaml"), ["schema.ValidationAnalyzer.Gateway"])
    assert [str(m) for m in result.messages] == [
        "Error [IST0106] (Gateway default/gw gw.yaml:7) Schema validation error: port is required",
        "Warning [IST0133] (Gateway default/gw gw.yaml:7) Schema validation warning: host looks odd",
    ]


def test_schema_analyzer_without_validation(monkeypatch):
    monkeypatch.setattr(schema, "_validation", None)
    monkeypatch.setattr(
        schema, "_validation_error", "pilotfish.api.validation is not available (test)"
    )
    result = analyze(load_text(BAD_GATEWAY, "gw.yaml"), ["schema.ValidationAnalyzer.Gateway"])
    assert result.messages == []
    assert "not available" in result.skipped["schema.ValidationAnalyzer.Gateway"]


def test_validator_crash_is_an_internal_error(monkeypatch):
    class Broken:
        @staticmethod
        def validate(res, default_namespace="default"):
            raise RuntimeError("boom")

    monkeypatch.setattr(schema, "_validation", Broken)
    result = analyze(load_text(BAD_GATEWAY, "gw.yaml"), ["schema.ValidationAnalyzer.Gateway"])
    assert [m.code for m in result.messages] == ["IST0001"]


@pytest.mark.parametrize(
    "text, parts",
    [
        ("spec.http[0].route[1].weight", ("spec", "http", 0, "route", 1, "weight")),
        ("", None),
        (None, None),
    ],
)
def test_parse_path(text, parts):
    assert schema.parse_path(text) == parts
