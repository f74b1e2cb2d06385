"""Durations, the kind registry, issues and field paths."""

import pytest

from pilotfish.api import KINDS, Issue, lookup, parse_duration, resolve
from pilotfish.api.duration import format_duration, parse_duration_ns
from pilotfish.api.issues import FieldPath
from pilotfish.api.kinds import split_api_version, supported


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("100ms", 0.1),
        ("1h2m3.5s", 3723.5),
        ("0", 0.0),
        ("0s", 0.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("2m", 120.0),
        ("1us", 1e-6),
        ("1µs", 1e-6),
        ("250ns", 2.5e-7),
        ("-1.5h", -5400.0),
        ("+10s", 10.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("10", "missing unit"),
        ("1x", "unknown unit"),
        ("s", "expected a number"),
        ("1 s", "unknown unit" if False else ""),
        ("1.2.3s", ""),
        ("1d", "unknown unit 'd'"),
        ("9999999999h", "too large"),
    ],
)
def test_parse_duration_errors(text, fragment):
    with pytest.raises(ValueError) as e:
        parse_duration(text)
    assert "invalid duration" in str(e.value) and fragment in str(e.value)


def test_parse_duration_rejects_non_strings():
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(5)  # type: ignore[arg-type]


def test_duration_precision_and_format():
    assert parse_duration_ns("1.0000000019s") == 1_000_000_001  # truncated like Go
    assert [format_duration(x) for x in (0, 1.5, 0.1, 2, 1e-6)] == ["0s", "1500ms", "100ms", "2s", "1us"]


def test_registry():
    vs = lookup("networking.istio.io", "VirtualService")
    assert vs.versions == ("v1", "v1beta1", "v1alpha3") and vs.namespaced and vs.support == "full"
    assert vs.api_versions[0] == "networking.istio.io/v1" and vs.resource == "virtualservice.networking.istio.io"
    assert lookup("", "Namespace").namespaced is False
    assert lookup("", "Service").preferred_api_version == "v1"
    assert lookup("example.com", "Widget") is None
    assert split_api_version("apps/v1") == ("apps", "v1") and split_api_version("v1") == ("", "v1")
    assert {(k.group, k.kind) for k in supported()} >= {
        ("", "Namespace"), ("", "Service"), ("apps", "Deployment"), ("", "Pod"), ("", "ServiceAccount"), ("", "Secret"),
        ("", "ConfigMap"), ("networking.istio.io", "Gateway"), ("networking.istio.io", "VirtualService"),
        ("networking.istio.io", "DestinationRule"), ("networking.istio.io", "ServiceEntry"), ("networking.istio.io", "Sidecar"),
        ("networking.istio.io", "WorkloadEntry"), ("networking.istio.io", "WorkloadGroup"),
        ("security.istio.io", "PeerAuthentication"), ("security.istio.io", "AuthorizationPolicy"),
        ("security.istio.io", "RequestAuthentication"), ("telemetry.istio.io", "Telemetry"),
    }
    assert len({k.key for k in KINDS}) == len(KINDS)


@pytest.mark.parametrize(
    "name, group, kind",
    [
        ("VirtualService", "networking.istio.io", "VirtualService"),
        ("virtualservices", "networking.istio.io", "VirtualService"),
        ("vs", "networking.istio.io", "VirtualService"),
        ("Gateway", "networking.istio.io", "Gateway"),
        ("gateways.gateway.networking.k8s.io", "gateway.networking.k8s.io", "Gateway"),
        ("Gateway.gateway.networking.k8s.io", "gateway.networking.k8s.io", "Gateway"),
        ("svc", "", "Service"),
        ("deploy", "apps", "Deployment"),
        ("pa", "security.istio.io", "PeerAuthentication"),
    ],
)
def test_resolve(name, group, kind):
    k = resolve(name)
    assert (k.group, k.kind) == (group, kind)


def test_resolve_unknown():
    with pytest.raises(KeyError):
        resolve("widgets")
    with pytest.raises(KeyError):
        resolve("VirtualService.example.com")


def test_issue_format():
    i = Issue("Error", "VirtualService", "default", "reviews", "spec.http[0].route", "total destination weight = 0", "reviews.yaml", 12)
    assert str(i) == "Error: VirtualService default/reviews (reviews.yaml:12): spec.http[0].route: total destination weight = 0"
    assert i.is_error and i.resource_name == "default/reviews" and i.origin == "reviews.yaml:12"
    j = Issue("Warning", "Namespace", None, "prod", "", "something", None, None)
    assert str(j) == "Warning: Namespace prod: something"
    k = Issue("Error", "", None, "", "", "not a Kubernetes resource", "a.json", 1)
    assert str(k) == "Error: document (a.json:1): not a Kubernetes resource"


def test_field_path():
    p = FieldPath().f("spec").f("http").i(0).f("match").i(1).f("headers").k("end-user")
    assert str(p) == "spec.http[0].match[1].headers[end-user]"
    assert p.parts == ("spec", "http", 0, "match", 1, "headers", "end-user")
    q = FieldPath.parse("spec.http[0].route[1].weight")
    assert q.parts == ("spec", "http", 0, "route", 1, "weight") and q == "spec.http[0].route[1].weight"
