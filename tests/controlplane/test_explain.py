"""``explain()``: a pure function of (ProxyConfig, request), tested on hand-built snapshots and,
when the control plane's translate() is available, on snapshots translated from bookinfo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilotfish.controlplane.explain import (
    ExplainError,
    explain,
    fmt_duration,
    humanize_reason,
    parse_headers,
    render,
)
from pilotfish.proxy import model

BOOKINFO = Path("/work/shared/istio/bookinfo")
REVIEWS = "reviews.default.svc.cluster.local"
V1 = f"outbound|9080|v1|{REVIEWS}"
V2 = f"outbound|9080|v2|{REVIEWS}"
V3 = f"outbound|9080|v3|{REVIEWS}"


def sidecar(routes: list[dict], *, clusters: list[dict] | None = None, endpoints: list[dict] | None = None,
            domains: list[str] | None = None, interception: str = "REDIRECT", extra_vhosts: list[dict] | None = None,
            labels: dict | None = None) -> model.ProxyConfig:
    """A productpage sidecar: virtualOutbound on 15001, route table 9080, passthrough otherwise."""
    clusters = clusters if clusters is not None else [
        {"name": V1, "lb_policy": "LEAST_REQUEST", "metadata": {"origin": "DestinationRule default/reviews dr.yaml:12"}},
        {"name": V2, "metadata": {"origin": "DestinationRule default/reviews dr.yaml:12"}},
        {"name": V3},
    ]
    endpoints = endpoints if endpoints is not None else [
        {"cluster": V1, "endpoints": [{"address": "10.0.0.11", "port": 9080, "labels": {"version": "v1"}}]},
        {"cluster": V2, "endpoints": [{"address": "10.0.0.12", "port": 9080, "labels": {"version": "v2"}}]},
        {"cluster": V3, "endpoints": [{"address": "10.0.0.13", "port": 9080, "labels": {"version": "v3"}}]},
    ]
    chain = {"name": "0.0.0.0_9080", "destination_port": 9080,
             "http": {"route_config": "9080", "traffic_direction": "OUTBOUND"}}
    if interception == "REDIRECT":
        listeners = [{"name": "virtualOutbound", "port": 15001, "use_original_dst": True,
                      "filter_chains": [chain],
                      "default_filter_chain": {"name": "PassthroughFilterChain", "tcp": {"cluster": "PassthroughCluster"}}}]
    else:
        listeners = [{"name": "127.0.0.1_9080", "address": "127.0.0.1", "port": 9080,
                      "default_filter_chain": {"http": {"route_config": "9080", "traffic_direction": "OUTBOUND"}}}]
    vhosts = [{"name": f"{REVIEWS}:9080", "domains": domains or [REVIEWS, "reviews", "reviews:9080"],
               "routes": routes}] + (extra_vhosts or [])
    return model.decode_config({
        "version": "7",
        "node": {"id": "sidecar~10.0.0.2~productpage-v1-abc.default~default.svc.cluster.local",
                 "role": "sidecar", "name": "productpage-v1-abc", "namespace": "default",
                 "labels": labels or {"app": "productpage", "version": "v1"}, "interception": interception},
        "listeners": listeners,
        "routes": [{"name": "9080", "virtual_hosts": vhosts}],
        "clusters": clusters + [{"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "PASSTHROUGH"}],
        "endpoints": endpoints,
    })


def to(cluster: str, weight: int = 100) -> dict:
    return {"cluster": cluster, "weight": weight}


JASON = {"name": "jason", "match": {"headers": {"end-user": {"exact": "jason"}}},
         "route": {"clusters": [to(V2)]}, "origin": "VirtualService default/reviews vs.yaml:9"}
DEFAULT_V3 = {"match": {"uri": {"prefix": "/"}}, "route": {"clusters": [to(V3)]},
              "origin": "VirtualService default/reviews vs.yaml:17"}


# --------------------------------------------------------------------------- routing


def test_header_route_not_taken_explains_why_and_falls_through():
    r = explain(sidecar([JASON, DEFAULT_V3]), "GET", "http://reviews:9080/reviews/0")
    assert r["listener"]["name"] == "virtualOutbound"
    assert r["listener"]["chain"]["name"] == "0.0.0.0_9080"
    assert r["route_table"] == "9080"
    assert r["virtual_host"]["name"] == f"{REVIEWS}:9080"
    assert "exact domain 'reviews:9080'" in r["virtual_host"]["why"]
    first, second = r["routes"]
    assert not first["matched"]
    assert first["reason"] == "needs header 'end-user' exact 'jason' (the request has no such header)"
    assert first["origin"] == "VirtualService default/reviews vs.yaml:9"
    assert second["matched"]
    assert r["route"]["name"] == "routes[1]"
    assert r["route"]["origin"] == "VirtualService default/reviews vs.yaml:17"
    assert [d["cluster"] for d in r["destinations"]] == [V3]
    assert r["outcome"]["status"] == 200
    assert V3 in r["outcome"]["summary"]


def test_header_route_taken_and_later_route_reported_as_shadowed():
    r = explain(sidecar([JASON, DEFAULT_V3]), "GET", "http://reviews:9080/reviews/0", ["end-user: jason"])
    assert r["routes"][0]["matched"]
    assert r["routes"][1]["reason"] == "would match, but jason matched first"
    r = explain(sidecar([JASON, {**DEFAULT_V3, "match": {"uri": {"prefix": "/x"}}}]), "GET",
                "http://reviews:9080/reviews/0", ["end-user: jason"])
    assert r["routes"][1]["reason"] == "not tried: jason matched first"
    d = r["destinations"][0]
    assert d["cluster"] == V2 and d["subset"] == "v2" and d["host"] == REVIEWS and d["port"] == 9080
    assert d["origin"] == "DestinationRule default/reviews dr.yaml:12"
    assert d["endpoints"] == [{"address": "10.0.0.12:9080", "health": "HEALTHY", "labels": {"version": "v2"}}]


def test_wrong_header_value_is_shown():
    r = explain(sidecar([JASON, DEFAULT_V3]), "GET", "http://reviews:9080/", {"End-User": "bob"})
    assert r["routes"][0]["reason"] == "needs header 'end-user' exact 'jason' (the request's header is 'bob')"


def test_no_route_matches_is_404_NR_with_actionable_summary():
    r = explain(sidecar([JASON]), "GET", "http://reviews:9080/reviews/0")
    assert r["outcome"]["status"] == 404
    assert r["outcome"]["flag"] == "NR"
    assert "no route of virtual host" in r["outcome"]["summary"]
    assert "route 'jason' needs header 'end-user' exact 'jason' (the request has no such header)" in r["outcome"]["summary"]
    assert r["route"] is None
    text = render(r)
    assert "Result: 404 NR" in text


def test_no_virtual_host_is_404_NR_with_close_domains():
    r = explain(sidecar([DEFAULT_V3]), "GET", "http://review:9080/")
    assert r["outcome"]["flag"] == "NR"
    assert r["virtual_host"]["name"] is None
    assert "reviews" in r["virtual_host"]["why"]  # the closest domains are suggested
    assert "reviews:9080" in r["virtual_host"]["domains_in_table"]


def test_port_stripped_and_wildcard_virtual_hosts():
    cfg = sidecar([DEFAULT_V3], domains=["reviews"],
                  extra_vhosts=[{"name": "wild", "domains": ["*.example.com"], "routes": [DEFAULT_V3]}])
    r = explain(cfg, "GET", "http://reviews:9080/")
    assert "(port stripped)" in r["virtual_host"]["why"]
    r = explain(cfg, "GET", "http://api.example.com:9080/")
    assert r["virtual_host"]["name"] == "wild"
    assert "suffix domain '*.example.com'" in r["virtual_host"]["why"]


def test_host_header_overrides_the_url_authority():
    cfg = sidecar([DEFAULT_V3], extra_vhosts=[{"name": "other", "domains": ["other:9080"], "routes": [DEFAULT_V3]}])
    r = explain(cfg, "GET", "http://10.0.0.99:9080/", ["Host: other:9080"])
    assert r["request"]["authority"] == "other:9080"
    assert r["virtual_host"]["name"] == "other"


def test_weighted_split_reports_percentages():
    route = {"route": {"clusters": [to(V1, 80), to(V2, 20)]}}
    r = explain(sidecar([route]), "GET", "http://reviews:9080/")
    assert [(d["subset"], d["weight"], d["percent"]) for d in r["destinations"]] == [("v1", 80, 80.0), ("v2", 20, 20.0)]
    assert "80% " + V1 in r["outcome"]["summary"] and "20% " + V2 in r["outcome"]["summary"]


def test_subset_without_endpoints_is_503_UH():
    r = explain(sidecar([DEFAULT_V3], endpoints=[]), "GET", "http://reviews:9080/")
    assert r["outcome"]["status"] == 503
    assert r["outcome"]["flag"] == "UH"
    assert any("subset v3" in n for n in r["notes"])
    assert "NONE (requests sent here fail with 503 UH)" in render(r)


def test_source_labels_route_is_dropped_for_this_proxy():
    only_reviews = {"name": "from-reviews", "match": {"source_labels": {"app": "reviews"}},
                    "route": {"clusters": [to(V1)]}}
    r = explain(sidecar([only_reviews, DEFAULT_V3]), "GET", "http://reviews:9080/")
    assert r["routes"][0]["reason"].startswith("dropped: source_labels")
    assert r["destinations"][0]["cluster"] == V3


# --------------------------------------------------------------------------- the route's settings


def test_retries_timeout_mirror_rewrite_headers_and_cluster_settings():
    route = {
        "name": "api",
        "match": {"uri": {"prefix": "/api"}},
        "route": {
            "clusters": [{"cluster": V1, "request_headers": {"set": {"x-subset": "v1"}}}],
            "timeout": "3s",
            "retries": {"attempts": 4, "per_try_timeout": "500ms", "retry_on": ["5xx", "connect-failure"]},
            "mirrors": [{"cluster": V2, "percentage": 25}],
            "rewrite": {"uri": "/v2"},
        },
        "request_headers": {"set": {"x-a": "1"}, "remove": ["x-b"]},
        "response_headers": {"add": {"x-c": "2"}},
    }
    clusters = [
        {"name": V1, "lb_policy": "RING_HASH", "hash_policy": {"header_name": "x-user"},
         "circuit_breakers": {"max_connections": 10, "max_pending_requests": 5},
         "outlier_detection": {"consecutive_5xx": 3, "interval": "5s", "base_ejection_time": "1m"},
         "metadata": {"origin": "DestinationRule default/reviews dr.yaml:3"}},
        {"name": V2}, {"name": V3},
    ]
    r = explain(sidecar([route], clusters=clusters), "GET", "http://reviews:9080/api/items?x=1")
    rt = r["route"]
    assert rt["timeout"] == "3s"
    assert rt["retries"]["attempts"] == 4
    assert rt["retries"]["per_try_timeout"] == "500ms"
    assert rt["retries"]["retry_on"] == ["5xx", "connect-failure"]
    assert rt["mirrors"] == [{"cluster": V2, "percentage": 25.0}]
    assert rt["rewrite"]["path"] == {"from": "/api/items", "to": "/v2/items"}
    assert rt["request_headers"] == {"set": {"x-a": "1"}, "remove": ["x-b"]}
    assert rt["response_headers"] == {"add": {"x-c": "2"}}
    d = r["destinations"][0]
    assert d["request_headers"] == {"set": {"x-subset": "v1"}}
    assert d["lb_policy"] == "RING_HASH" and d["hash_on"] == "header x-user"
    assert d["connection_pool"] == {"max_connections": 10, "max_pending_requests": 5}
    assert d["outlier_detection"]["consecutive_5xx"] == 3
    assert d["outlier_detection"]["base_ejection_time"] == "1m"
    text = render(r)
    for expected in ("timeout:          3s", "retries:          4 attempts, per try timeout 500ms, on 5xx,connect-failure",
                     "rewrite:          path /api/items -> /v2/items", "mirror:           25% of requests also to",
                     "load balancing:    RING_HASH (hash on header x-user)",
                     "connection pool:   max_connections: 10, max_pending_requests: 5",
                     "outlier detection: eject after 3 consecutive 5xx, every 5s, for 1m",
                     "from:              DestinationRule default/reviews dr.yaml:3",
                     "request headers:  set x-a: 1; remove x-b"):
        assert expected in text, expected


def test_fault_abort_for_every_request_is_FI():
    route = {"fault": {"abort": {"http_status": 503, "percentage": 100}}, "route": {"clusters": [to(V1)]}}
    r = explain(sidecar([route]), "GET", "http://reviews:9080/")
    assert (r["outcome"]["status"], r["outcome"]["flag"]) == (503, "FI")


def test_partial_fault_and_delay_are_described():
    route = {"fault": {"abort": {"http_status": 500, "percentage": 10},
                       "delay": {"fixed_delay": "7s", "percentage": 50}},
             "route": {"clusters": [to(V1)]}}
    r = explain(sidecar([route]), "GET", "http://reviews:9080/")
    s = r["outcome"]["summary"]
    assert "50% of requests are delayed 7s (DI)" in s
    assert "10% of requests are aborted with 500 (FI)" in s
    assert r["outcome"]["status"] is None  # it depends on the dice


def test_redirect_and_direct_response():
    redirect = {"match": {"uri": {"exact": "/old"}}, "redirect": {"uri": "/new", "response_code": 302}}
    direct = {"match": {"uri": {"exact": "/health"}}, "direct_response": {"status": 200, "body": "ok"}}
    cfg = sidecar([redirect, direct, DEFAULT_V3])
    r = explain(cfg, "GET", "http://reviews:9080/old?a=1")
    assert r["route"]["redirect"] == {"status": 302, "location": "http://reviews:9080/new?a=1"}
    assert r["outcome"]["status"] == 302
    r = explain(cfg, "GET", "http://reviews:9080/health")
    assert r["outcome"]["status"] == 200 and "direct response" in r["outcome"]["summary"]


def test_cors_preflight_from_allowed_origin_is_answered_by_the_proxy():
    route = {"cors": {"allow_origins": [{"exact": "https://app.example.com"}], "allow_methods": ["GET"]},
             "route": {"clusters": [to(V1)]}}
    cfg = sidecar([route])
    r = explain(cfg, "OPTIONS", "http://reviews:9080/",
                ["Origin: https://app.example.com", "Access-Control-Request-Method: GET"])
    assert r["route"]["cors"]["origin_allowed"] is True
    assert "preflight" in r["outcome"]["summary"]
    r = explain(cfg, "GET", "http://reviews:9080/", ["Origin: https://evil.example.com"])
    assert r["route"]["cors"]["origin_allowed"] is False
    assert "is NOT allowed" in render(r)


# --------------------------------------------------------------------------- listeners


def test_unknown_port_goes_to_the_passthrough_tcp_chain():
    r = explain(sidecar([DEFAULT_V3]), "GET", "http://example.com/")
    assert r["listener"]["chain"]["type"] == "tcp"
    assert r["destinations"][0]["cluster"] == "PassthroughCluster"
    assert "TCP proxy" in r["outcome"]["summary"]


def test_interception_none_uses_the_listener_bound_on_the_port():
    r = explain(sidecar([DEFAULT_V3], interception="NONE"), "GET", "http://reviews:9080/")
    assert r["listener"]["name"] == "127.0.0.1_9080"
    assert "interception mode NONE" in r["listener"]["why"]
    assert r["destinations"][0]["cluster"] == V3
    r = explain(sidecar([DEFAULT_V3], interception="NONE"), "GET", "http://reviews:9999/")
    assert r["listener"]["name"] is None
    assert "connection refused" in r["outcome"]["summary"]


def test_gateway_listener_by_port():
    cfg = model.decode_config({
        "node": {"role": "gateway", "name": "istio-ingressgateway-1", "namespace": "istio-system"},
        "listeners": [{"name": "0.0.0.0_8080", "port": 8080,
                       "default_filter_chain": {"http": {"route_config": "http.8080"}}}],
        "routes": [{"name": "http.8080", "virtual_hosts": [
            {"name": "bookinfo", "domains": ["*"], "routes": [
                {"match": {"uri": {"exact": "/productpage"}},
                 "route": {"clusters": [to("outbound|9080||productpage.default.svc.cluster.local")]}}]}]}],
        "clusters": [{"name": "outbound|9080||productpage.default.svc.cluster.local"}],
        "endpoints": [{"cluster": "outbound|9080||productpage.default.svc.cluster.local",
                       "endpoints": [{"address": "10.0.0.20", "port": 9080}]}],
    })
    r = explain(cfg, "GET", "http://bookinfo.example.com:8080/productpage")
    assert r["listener"]["name"] == "0.0.0.0_8080"
    assert r["destinations"][0]["subset"] is None
    assert r["outcome"]["status"] == 200
    r = explain(cfg, "GET", "http://bookinfo.example.com:8080/login")
    assert r["outcome"]["flag"] == "NR"
    assert "needs uri exact '/productpage'" in r["routes"][0]["reason"]
    # port 80 of Istio's ingress gateway Service is the gateway's 8080
    r = explain(cfg, "GET", "http://bookinfo.example.com/productpage")
    assert r["listener"]["name"] == "0.0.0.0_8080" and "Service is its port 8080" in r["listener"]["why"]
    assert r["outcome"]["status"] == 200
    r = explain(cfg, "GET", "http://bookinfo.example.com:9999/productpage")
    assert r["listener"]["name"] is None and "0.0.0.0:8080" in r["outcome"]["summary"]


# --------------------------------------------------------------------------- inputs and output


def test_parse_headers_and_bad_inputs():
    assert parse_headers(["end-user: jason", "X-A:1"]) == [("end-user", "jason"), ("X-A", "1")]
    with pytest.raises(ExplainError):
        parse_headers(["no colon"])
    with pytest.raises(ExplainError):
        explain(sidecar([DEFAULT_V3]), "GET", "ftp://reviews/")
    with pytest.raises(ExplainError):
        explain(sidecar([DEFAULT_V3]), "GET", "/only-a-path")
    r = explain(sidecar([DEFAULT_V3]), "GET", "/only-a-path", ["Host: reviews:9080"])
    assert r["request"]["port"] == 80  # no URL port: the scheme's default


def test_result_is_json_and_render_names_every_step():
    r = explain(sidecar([JASON, DEFAULT_V3]), "GET", "http://reviews:9080/reviews/0")
    assert json.loads(json.dumps(r)) == r
    text = render(r)
    for expected in ("Request:  GET http://reviews:9080/reviews/0", "Listener", "Route table '9080'",
                     "virtual host", "Routes (in order; the first match wins)", "=> 1. routes[1]",
                     "from VirtualService default/reviews vs.yaml:9", "Destinations", "Result:"):
        assert expected in text, expected


def test_helpers():
    assert fmt_duration(None) == "none"
    assert fmt_duration(0.25) == "250ms"
    assert fmt_duration("90s") == "1m30s"
    assert fmt_duration(7200) == "2h"
    assert humanize_reason("uri prefix '/a': no match for '/b'") == "needs uri prefix '/a' (the request's path is '/b')"
    assert humanize_reason("something else") == "something else"


# --------------------------------------------------------------------------- from bookinfo YAML


def bookinfo_config(*extra: str, node: model.Node | None = None) -> model.ProxyConfig:
    """A proxy's snapshot translated from bookinfo's YAML (read where it lives) plus ``extra``."""
    from pilotfish.api.loader import load_paths
    from pilotfish.config import Store
    from pilotfish.controlplane.translate import translate
    from pilotfish.controlplane.view import ConfigView
    from pilotfish.registry import Registry

    store = Store()
    files = ["bookinfo.yaml", "destination-rule-all.yaml", *extra]
    store.apply(load_paths([str(BOOKINFO / f) for f in files]))
    view = ConfigView.build(store.list())
    node = node or model.Node(
        id="sidecar~10.0.0.2~productpage-v1-abc.default~default.svc.cluster.local", role="sidecar",
        name="productpage-v1-abc", namespace="default", labels={"app": "productpage", "version": "v1"},
        service_account="bookinfo-productpage", ips=["10.0.0.2"], workload_ports=[9080])
    return translate(view, Registry.build(view), node)


def test_bookinfo_jason_route_through_translate():
    vs_file = BOOKINFO / "virtual-service-reviews-jason-v2-v3.yaml"
    cfg = bookinfo_config(vs_file.name)
    r = explain(cfg, "GET", "http://reviews:9080/reviews/0", ["end-user: jason"])
    assert r["route"] is not None, render(r)
    assert [d["subset"] for d in r["destinations"]] == ["v2"]
    assert str(vs_file) in (r["route"]["origin"] or "")
    assert "destination-rule-all.yaml" in (r["destinations"][0].get("origin") or "")
    r = explain(cfg, "GET", "http://reviews:9080/reviews/0")
    assert [d["subset"] for d in r["destinations"]] == ["v3"]
    assert "end-user" in r["routes"][0]["reason"]
    # no pods run here: the clusters have no endpoints, and explain says what that means
    assert r["outcome"]["flag"] == "UH"


def test_bookinfo_ratings_abort_for_jason_is_FI():
    cfg = bookinfo_config("virtual-service-ratings-test-abort.yaml")
    r = explain(cfg, "GET", "http://ratings:9080/ratings/0", ["end-user: jason"])
    assert (r["outcome"]["status"], r["outcome"]["flag"]) == (500, "FI")
    assert "virtual-service-ratings-test-abort.yaml" in r["route"]["origin"]
    r = explain(cfg, "GET", "http://ratings:9080/ratings/0")
    assert r["outcome"]["flag"] != "FI"


def test_bookinfo_unknown_host_passes_through_and_none_mode_404s():
    cfg = bookinfo_config()
    r = explain(cfg, "GET", "http://example.com:9080/")  # REDIRECT: the allow_any virtual host
    assert r["virtual_host"]["name"] == "allow_any"
    assert r["destinations"][0]["cluster"] == "PassthroughCluster"
    node = model.Node(id="sidecar~10.0.0.2~productpage-v1-abc.default~default.svc.cluster.local", role="sidecar",
                      name="productpage-v1-abc", namespace="default", labels={"app": "productpage"},
                      interception="NONE", ips=["127.0.0.10"])
    cfg = bookinfo_config(node=node)
    r = explain(cfg, "GET", "http://reviews:9080/reviews/0")
    assert r["listener"]["name"] == "127.0.0.1_15001" and "HTTP proxy" in r["listener"]["why"]
    assert r["destinations"][0]["cluster"] == f"outbound|9080||{REVIEWS}"
    r = explain(cfg, "GET", "http://example.com:9080/")
    assert r["outcome"]["flag"] == "NR"


def test_bookinfo_gateway():
    node = model.Node(id="router~10.0.0.9~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
                      role="gateway", name="istio-ingressgateway-1", namespace="istio-system",
                      labels={"istio": "ingressgateway"})
    cfg = bookinfo_config("bookinfo-gateway.yaml", node=node)
    r = explain(cfg, "GET", "http://bookinfo.example.com/productpage")
    assert r["listener"]["name"] == "0.0.0.0_8080"
    assert r["destinations"][0]["cluster"] == "outbound|9080||productpage.default.svc.cluster.local"
    assert "bookinfo-gateway.yaml" in r["route"]["origin"]
    r = explain(cfg, "GET", "http://bookinfo.example.com/admin")
    assert r["outcome"]["flag"] == "NR"
    assert "needs uri exact '/productpage'" in r["outcome"]["summary"]
