"""Istio's bookinfo, read from /work/shared/istio/bookinfo at run time, translated for the
productpage sidecar (and the ingress gateway)."""

from __future__ import annotations

import os

import msgspec
import pytest

from pilotfish.api import parse
from pilotfish.api.loader import load_file
from pilotfish.api.types.k8s import Pod
from pilotfish.controlplane.translate import translate
from pilotfish.controlplane.view import ConfigView
from pilotfish.proxy import model
from pilotfish.registry import Registry

BOOKINFO = "/work/shared/istio/bookinfo"

pytestmark = pytest.mark.skipif(not os.path.isdir(BOOKINFO), reason="Istio's bookinfo sample is not available")


def host(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


def cl(name: str, subset: str = "") -> str:
    return f"outbound|9080|{subset}|{host(name)}"


def pods_for(objects) -> list:
    """One running pod per Deployment (what the runtime will create), with addresses."""
    pods = []
    for i, o in enumerate(x for x in objects if x.kind == "Deployment"):
        tpl = o.spec.template
        pods.append(msgspec.convert({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{o.metadata.name}-0", "namespace": "default", "labels": dict(tpl.metadata.labels)},
            "spec": msgspec.to_builtins(tpl.spec),
            "status": {"phase": "Running", "podIP": f"10.244.0.{10 + i}",
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }, Pod))
    return pods


def load(*files: str) -> tuple[ConfigView, Registry]:
    resources = [r for f in files for r in load_file(os.path.join(BOOKINFO, f))]
    objects = [parse(r) for r in resources]
    view = ConfigView.build(resources + pods_for(objects))
    return view, Registry.build(view)


PRODUCTPAGE = model.Node(role="sidecar", name="productpage-v1-0", namespace="default",
                         labels={"app": "productpage", "version": "v1"}, ips=["10.244.0.15"])

# virtual-service file -> the reviews routes: [(header match or None, [(subset, weight)])]
EXPECTED = {
    "virtual-service-all-v1.yaml": [(None, [("v1", 100)])],
    "virtual-service-reviews-v3.yaml": [(None, [("v3", 100)])],
    "virtual-service-reviews-50-v3.yaml": [(None, [("v1", 50), ("v3", 50)])],
    "virtual-service-reviews-80-20.yaml": [(None, [("v1", 80), ("v2", 20)])],
    "virtual-service-reviews-90-10.yaml": [(None, [("v1", 90), ("v2", 10)])],
    "virtual-service-reviews-v2-v3.yaml": [(None, [("v2", 50), ("v3", 50)])],
    "virtual-service-reviews-test-v2.yaml": [("jason", [("v2", 100)]), (None, [("v1", 100)])],
    "virtual-service-reviews-jason-v2-v3.yaml": [("jason", [("v2", 100)]), (None, [("v3", 100)])],
}


@pytest.mark.parametrize("vs_file", sorted(EXPECTED))
def test_productpage_reviews_routes(vs_file):
    view, reg = load("bookinfo.yaml", "destination-rule-all.yaml", "virtual-service-all-v1.yaml", vs_file)
    cfg = translate(view, reg, PRODUCTPAGE)
    msgspec.convert(msgspec.to_builtins(cfg), model.ProxyConfig)  # a valid snapshot

    (rt,) = [r for r in cfg.routes if r.name == "9080"]
    vhs = {vh.name: vh for vh in rt.virtual_hosts}
    assert sorted(vhs) == sorted([f"{host(n)}:9080" for n in ("details", "productpage", "ratings", "reviews")]
                                 + ["allow_any"])
    reviews = vhs[f"{host('reviews')}:9080"]
    assert "reviews" in reviews.domains and "reviews:9080" in reviews.domains
    got = []
    for r in reviews.routes:
        header = r.match.headers.get("end-user")
        got.append((header.exact if header else None,
                    [(w.cluster.split("|")[2], w.weight) for w in r.route.clusters]))
        assert r.route.timeout is None and r.route.retries.attempts == 2
        assert r.origin.startswith("VirtualService default/reviews ")
    assert got == EXPECTED[vs_file]

    # every reviews subset is a cluster with the pods of its version as endpoints
    eps = {ce.cluster: [(e.address, e.port, e.labels.get("version")) for e in ce.endpoints] for ce in cfg.endpoints}
    for v in ("v1", "v2", "v3"):
        c = next(c for c in cfg.clusters if c.name == cl("reviews", v))
        assert c.lb_policy == "LEAST_REQUEST" and c.metadata["subset"] == v
        assert c.metadata["origin"].startswith("DestinationRule default/reviews ")
        ((addr, port, version),) = eps[cl("reviews", v)]
        assert port == 9080 and version == v
    assert len(eps[cl("reviews")]) == 3

    # the other services keep their all-v1 routes
    (details,) = vhs[f"{host('details')}:9080"].routes
    assert [w.cluster for w in details.route.clusters] == [cl("details", "v1")]

    # listeners: interception on 15001/15006; productpage's own port inbound
    names = [x.name for x in cfg.listeners]
    assert names == ["virtualInbound", "virtualOutbound"]
    inbound = cfg.listeners[0]
    assert [c.destination_port for c in inbound.filter_chains] == [9080]
    assert [(e.address, e.port) for ce in cfg.endpoints if ce.cluster == "inbound|9080||" for e in ce.endpoints] == [
        ("127.0.0.1", 9080)]


def test_ratings_fault_injection():
    view, reg = load("bookinfo.yaml", "destination-rule-all.yaml", "virtual-service-all-v1.yaml",
                     "virtual-service-ratings-test-abort.yaml")
    cfg = translate(view, reg, model.Node(role="sidecar", name="reviews-v2-0", namespace="default",
                                          labels={"app": "reviews", "version": "v2"}))
    (rt,) = [r for r in cfg.routes if r.name == "9080"]
    (ratings,) = [vh for vh in rt.virtual_hosts if vh.name == f"{host('ratings')}:9080"]
    jason, rest = ratings.routes
    assert jason.fault == model.Fault(abort=model.FaultAbort(http_status=500, percentage=100.0))
    assert rest.fault is None and [w.cluster for w in rest.route.clusters] == [cl("ratings", "v1")]


def test_ingress_gateway():
    view, reg = load("bookinfo.yaml", "destination-rule-all.yaml", "bookinfo-gateway.yaml")
    cfg = translate(view, reg, model.Node(role="gateway", name="istio-ingressgateway-0", namespace="istio-system",
                                          labels={"istio": "ingressgateway"}))
    msgspec.convert(msgspec.to_builtins(cfg), model.ProxyConfig)
    assert [x.name for x in cfg.listeners] == ["0.0.0.0_8080"]
    (rt,) = cfg.routes
    assert rt.name == "http.8080"
    (vh,) = rt.virtual_hosts
    assert vh.domains == ["*"]
    assert [r.match.uri for r in vh.routes] == [
        model.StringMatch(exact="/productpage"), model.StringMatch(prefix="/static"),
        model.StringMatch(exact="/login"), model.StringMatch(exact="/logout"),
        model.StringMatch(prefix="/api/v1/products")]
    assert {w.cluster for r in vh.routes for w in r.route.clusters} == {cl("productpage")}


def test_productpage_explicit_proxy_mode():
    view, reg = load("bookinfo.yaml", "destination-rule-all.yaml", "virtual-service-reviews-jason-v2-v3.yaml")
    node = model.Node(role="sidecar", name="productpage-v1-0", namespace="default", interception="NONE",
                      labels={"app": "productpage", "version": "v1"}, ips=["10.244.0.15"], app_ports={9080: 19080})
    cfg = translate(view, reg, node)
    msgspec.convert(msgspec.to_builtins(cfg), model.ProxyConfig)
    assert [x.name for x in cfg.listeners] == ["10.244.0.15_9080", "127.0.0.1_15001"]
    (rt,) = [r for r in cfg.routes if r.name == "http_proxy"]
    (reviews,) = [vh for vh in rt.virtual_hosts if "reviews:9080" in vh.domains]
    assert [w.cluster for r in reviews.routes for w in r.route.clusters] == [cl("reviews", "v2"), cl("reviews", "v3")]
    assert [(e.address, e.port) for ce in cfg.endpoints if ce.cluster == "inbound|9080||" for e in ce.endpoints] == [
        ("127.0.0.1", 19080)]
