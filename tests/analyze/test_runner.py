"""The runner: namespaces, suppressions, ordering, de-duplication, lines, stand-in workloads."""

from __future__ import annotations

import pytest

from pilotfish.analyze import NOT_APPLICABLE, analyze, default_analyzers, mesh_config
from pilotfish.api.loader import Resource, load_text

CFG = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v4
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: quiet
  namespace: other
  annotations: {galley.istio.io/analyze-suppress: IST0101}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: loud, namespace: other}
spec:
  hosts: [details]
  http: [{route: [{destination: {host: details}}]}]
"""


def res():
    return load_text(CFG, "cfg.yaml")


def test_message_line_points_at_the_field():
    msgs = analyze(res(), ["virtualservice.DestinationRuleAnalyzer"]).messages
    assert [str(m) for m in msgs] == [
        'Error [IST0101] (VirtualService default/reviews cfg.yaml:11) Referenced host+subset in destinationrule not found: "reviews+v4"'
    ]
    d = msgs[0].to_dict()
    assert d == {
        "code": "IST0101",
        "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/?ref=istioctl-analyze",
        "level": "Error",
        "message": 'Referenced host+subset in destinationrule not found: "reviews+v4"',
        "origin": "VirtualService default/reviews",
        "reference": "cfg.yaml:11",
    }


def test_line_from_file_when_loader_has_no_line_map(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text(CFG)
    plain = [Resource(r.data, str(f), r.line) for r in res()]  # no extra["lines"]
    msgs = analyze(plain, ["virtualservice.DestinationRuleAnalyzer"]).messages
    assert msgs[0].reference == f"{f}:11"


def test_namespace_filter_and_suppressions():
    names = ["virtualservice.DestinationHostAnalyzer"]
    all_ns = analyze(res(), names, services_known=True)
    # Ordered as istioctl orders: level, code, then kind/name/namespace.
    assert [m.resource for m in all_ns.messages] == [
        "VirtualService other/loud",
        "VirtualService default/reviews",
    ]
    only_other = analyze(res(), names, namespace="other", services_known=True)
    assert [m.resource for m in only_other.messages] == ["VirtualService other/loud"]
    suppressed = analyze(
        res(), names, services_known=True, suppress=[("IST0101", "VirtualService *")]
    )
    assert suppressed.messages == []
    older_form = analyze(
        res(), names, services_known=True, suppress=[("IST0101", "VirtualService loud.other")]
    )
    assert [m.resource for m in older_form.messages] == ["VirtualService default/reviews"]


def test_host_checks_need_known_services():
    """Files without any Service or ServiceEntry say nothing about which hosts exist."""
    result = analyze(res(), ["virtualservice.DestinationHostAnalyzer"])
    assert result.messages == []
    assert "declares no services" in result.skipped["virtualservice.DestinationHostAnalyzer"]


def test_default_namespace_applies_to_resources_without_one():
    msgs = analyze(
        res(), ["virtualservice.DestinationRuleAnalyzer"], default_namespace="shop"
    ).messages
    assert msgs[0].resource == "VirtualService shop/reviews"


def test_sorted_by_level_then_code_and_deduplicated():
    cfg = """
apiVersion: v1
kind: Service
metadata: {name: s, namespace: default}
spec: {selector: {app: s}, ports: [{port: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: default}
spec:
  hosts: [s]
  http:
  - route: [{destination: {host: nowhere}}]
  - route: [{destination: {host: nowhere}}]
"""
    msgs = analyze(load_text(cfg, "c.yaml")).messages
    assert [(str(m.level), m.code) for m in msgs] == [
        ("Error", "IST0101"),
        ("Error", "IST0101"),
        ("Warning", "IST0130"),
        ("Info", "IST0118"),
    ]
    # The same finding at the same field is reported once.
    again = analyze(load_text(cfg, "c.yaml") + load_text(cfg, "c.yaml")).messages
    assert len(again) == len(msgs)


def test_last_resource_with_a_name_wins():
    first = load_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1}]}\n", "a.yaml"
    )
    second = load_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 2, name: http}]}\n",
        "b.yaml",
    )
    msgs = analyze(first + second, ["service.PortNameAnalyzer"]).messages
    assert msgs == []
    msgs = analyze(second + first, ["service.PortNameAnalyzer"]).messages
    assert [m.reference for m in msgs] == ["a.yaml:4"]


def test_messages_about_standin_pods_name_the_deployment():
    cfg = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {app: web}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http:
  - match: [{headers: {"@request.auth.claims.sub": {exact: me}}}]
    route: [{destination: {host: a.example.com}}]
"""
    msgs = analyze(load_text(cfg, "c.yaml"), ["virtualservice.JWTClaimRouteAnalyzer"]).messages
    assert [m.resource for m in msgs] == ["VirtualService default/v"]
    assert "pod (web)" in msgs[0].text


def test_default_ingress_follows_mesh_config():
    gw = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    names = ["gateway.IngressGatewayPortAnalyzer"]
    assert analyze(load_text(gw), names, workloads_known=True).messages == []
    off = mesh_config({"ingressControllerMode": "OFF"})
    assert [
        m.code for m in analyze(load_text(gw), names, workloads_known=True, mesh=off).messages
    ] == ["IST0101"]


def test_analyzer_names():
    with pytest.raises(KeyError):
        analyze([], ["virtualservice.NoSuchAnalyzer"])
    result = analyze([], ["envoyfilter.EnvoyPatchAnalyzer"])
    assert result.executed == []
    assert result.skipped == {
        "envoyfilter.EnvoyPatchAnalyzer": NOT_APPLICABLE["envoyfilter.EnvoyPatchAnalyzer"]
    }
    defaults = {a.name for a in default_analyzers()}
    assert "annotations.AlphaAnalyzer" not in defaults
    assert "virtualservice.DestinationHostAnalyzer" in defaults


def test_objects_of_a_store_are_accepted():
    class Stored:
        def __init__(self, res):
            self.res = res

        def to_resource(self):
            return self.res

    items = [Stored(r) for r in res()]
    msgs = analyze(items, ["virtualservice.DestinationRuleAnalyzer"]).messages
    assert [m.resource for m in msgs] == ["VirtualService default/reviews"]
