"""Analyzers read user input as it is: wrong types or missing fields must never crash them."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilotfish.analyze import all_analyzers, analyze
from pilotfish.api.loader import Resource, load_file

from .conftest import ANALYZE_DATA, needs_shared

KINDS = [
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "ServiceEntry"),
    ("networking.istio.io/v1", "Sidecar"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "RequestAuthentication"),
    ("telemetry.istio.io/v1", "Telemetry"),
    ("v1", "Service"),
    ("v1", "Pod"),
    ("v1", "Namespace"),
    ("v1", "Secret"),
    ("apps/v1", "Deployment"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
]
FIELDS = [
    "hosts",
    "http",
    "tcp",
    "tls",
    "route",
    "destination",
    "host",
    "subset",
    "port",
    "number",
    "gateways",
    "servers",
    "selector",
    "matchLabels",
    "workloadSelector",
    "labels",
    "rules",
    "from",
    "source",
    "namespaces",
    "principals",
    "ports",
    "protocol",
    "targetPort",
    "match",
    "uri",
    "regex",
    "prefix",
    "mirror",
    "exportTo",
    "subsets",
    "trafficPolicy",
    "template",
    "spec",
    "metadata",
    "containers",
    "name",
    "tls",
    "mode",
    "credentialName",
    "accessLogging",
    "providers",
    "status",
    "conditions",
    "addresses",
    "listeners",
    "hostname",
    "annotations",
    "data",
]

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 70000),
    st.sampled_from(["", "*", "a", "x.y", "ns/a", "*.b", "80", "STRICT", "DISABLE", "SIMPLE"]),
)
value = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def resources(draw):
    out = []
    for _ in range(draw(st.integers(1, 5))):
        api, kind = draw(st.sampled_from(KINDS))
        md = draw(
            st.one_of(
                st.just({"name": "n", "namespace": "default"}),
                st.dictionaries(
                    st.sampled_from(["name", "namespace", "labels", "annotations"]),
                    value,
                    max_size=4,
                ),
            )
        )
        data = {"apiVersion": api, "kind": kind, "metadata": md, "spec": draw(value)}
        if draw(st.booleans()):
            data["status"] = draw(value)
        out.append(Resource(data, "f.yaml", 1))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources())
def test_no_analyzer_crashes_on_odd_input(res):
    analyze(res, list(all_analyzers()), workloads_known=True)


@needs_shared
def test_every_istio_test_file_through_every_analyzer():
    res = []
    for f in sorted((ANALYZE_DATA / "testdata").rglob("*.yaml")):
        res += load_file(str(f))
    result = analyze(res, list(all_analyzers()), default_namespace="")
    assert result.messages
