"""translate(view, registry, node) -> ProxyConfig, table-driven: one row per Istio rule.

Each row gives YAML resources and a node; its check function asserts on the listeners,
route tables, clusters and endpoints produced. Every snapshot produced here must also pass
the proxy model's own validation (every reference resolved)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import pytest

from pilotfish.api.loader import load_text
from pilotfish.controlplane.translate import translate
from pilotfish.controlplane.view import ConfigView
from pilotfish.proxy import model
from pilotfish.registry import Registry

# --------------------------------------------------------------------------- helpers


def build(text: str, **kw) -> tuple[ConfigView, Registry]:
    view = ConfigView.build(load_text(textwrap.dedent(text), "t.yaml"), **kw)
    return view, Registry.build(view)


def sidecar(ns: str = "default", labels: dict | None = None, **kw) -> model.Node:
    return model.Node(role="sidecar", name=kw.pop("name", "client"), namespace=ns,
                      labels=labels if labels is not None else {"app": "client"}, **kw)


def gateway(ns: str = "istio-system", labels: dict | None = None) -> model.Node:
    return model.Node(role="gateway", name="ingress", namespace=ns,
                      labels=labels if labels is not None else {"istio": "ingressgateway"})


def run(text: str, node: model.Node | None = None, **kw) -> model.ProxyConfig:
    view, reg = build(text, **kw)
    cfg = translate(view, reg, node or sidecar())
    # a valid snapshot: decodes again with every reference resolved
    again = msgspec.convert(msgspec.to_builtins(cfg), model.ProxyConfig)
    assert msgspec.json.encode(again) == msgspec.json.encode(cfg)
    return cfg


def table(cfg: model.ProxyConfig, name: str) -> model.RouteConfiguration:
    for r in cfg.routes:
        if r.name == name:
            return r
    raise AssertionError(f"no route table {name!r} in {[r.name for r in cfg.routes]}")


def vhost(cfg: model.ProxyConfig, table_name: str, domain: str) -> model.VirtualHost:
    for vh in table(cfg, table_name).virtual_hosts:
        if domain in vh.domains:
            return vh
    raise AssertionError(f"no virtual host for {domain!r} in table {table_name!r}")


def cluster(cfg: model.ProxyConfig, name: str) -> model.Cluster:
    for c in cfg.clusters:
        if c.name == name:
            return c
    raise AssertionError(f"no cluster {name!r}")


def endpoints(cfg: model.ProxyConfig, name: str) -> list[tuple[str, int]]:
    for ce in cfg.endpoints:
        if ce.cluster == name:
            return [(e.address, e.port) for e in ce.endpoints]
    raise AssertionError(f"no endpoints for {name!r}")


def listener(cfg: model.ProxyConfig, name: str) -> model.Listener:
    for lst in cfg.listeners:
        if lst.name == name:
            return lst
    raise AssertionError(f"no listener {name!r} in {[x.name for x in cfg.listeners]}")


def dests(route: model.Route) -> list[tuple[str, int]]:
    assert route.route is not None
    return [(w.cluster, w.weight) for w in route.route.clusters]


def only_dest(route: model.Route) -> str:
    (c, _), = dests(route)
    return c


R = "outbound|9080||reviews.default.svc.cluster.local"
R1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
R2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
R3 = "outbound|9080|v3|reviews.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"


def svc(name: str, ns: str = "default", port: int = 9080, port_name: str = "http", extra: str = "",
        ip: str | None = None, created: str | None = None) -> str:
    md = f"{{name: {name}, namespace: {ns}" + (f", creationTimestamp: '{created}'" if created else "") + "}"
    return f"""
---
apiVersion: v1
kind: Service
metadata: {md}
spec:
  {f'clusterIP: {ip}' if ip else ''}
  selector: {{app: {name}}}
  ports: [{{name: {port_name}, port: {port}}}]
{extra}
"""


def pod(name: str, app: str, ip: str, ns: str = "default", version: str = "v1", ports: str = "[]") -> str:
    return f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}, version: {version}}}}}
spec: {{containers: [{{name: c, ports: {ports}}}]}}
status: {{phase: Running, podIP: {ip}, conditions: [{{type: Ready, status: "True"}}]}}
"""


DR_REVIEWS = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""

BASE = svc("reviews") + svc("ratings") + DR_REVIEWS


@dataclass
class Case:
    id: str
    yaml: str
    check: Callable[[model.ProxyConfig], None]
    node: model.Node | None = None
    kw: dict | None = None


CASES: list[Case] = []


def case(id: str, yaml: str, node: model.Node | None = None, **kw):
    def register(fn):
        CASES.append(Case(id, yaml, fn, node, kw or None))
        return fn
    return register


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_translate(c: Case):
    cfg = run(c.yaml, c.node, **(c.kw or {}))
    c.check(cfg)


# --------------------------------------------------------------------------- hosts and domains


@case("short-names-expand-in-the-vs-namespace", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
""")
def _(cfg):
    vh = vhost(cfg, "9080", REVIEWS)
    assert vh.name == f"{REVIEWS}:9080"
    (r,) = vh.routes
    assert only_dest(r) == R1
    assert r.origin.startswith("VirtualService default/reviews t.yaml:")


@case("short-names-of-another-namespace-vs", svc("reviews") + svc("ratings", ns="other") + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: other}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route: [{destination: {host: ratings}}]
""")
def _(cfg):
    (r,) = vhost(cfg, "9080", REVIEWS).routes
    assert only_dest(r) == "outbound|9080||ratings.other.svc.cluster.local"


@case("domains-same-namespace", svc("reviews", ip="10.0.0.5"))
def _(cfg):
    vh = vhost(cfg, "9080", REVIEWS)
    assert vh.domains == [
        REVIEWS, f"{REVIEWS}:9080", "reviews", "reviews:9080", "reviews.default.svc", "reviews.default.svc:9080",
        "reviews.default", "reviews.default:9080", "10.0.0.5", "10.0.0.5:9080"]


@case("domains-other-namespace-no-short-name", svc("reviews", ip="10.0.0.5"), node=sidecar("other"))
def _(cfg):
    vh = vhost(cfg, "9080", REVIEWS)
    assert "reviews" not in vh.domains and "reviews:9080" not in vh.domains
    assert vh.domains == [REVIEWS, f"{REVIEWS}:9080", "reviews.default", "reviews.default:9080",
                          "reviews.default.svc", "reviews.default.svc:9080", "10.0.0.5", "10.0.0.5:9080"]


WILD = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com, www.api.example.com]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other}
spec:
  hosts: [foo.example.org]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broad, creationTimestamp: "2020-01-01T00:00:00Z"}
spec:
  hosts: ["*.com"]
  http: [{route: [{destination: {host: foo.example.org}}], name: broad}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: narrow, creationTimestamp: "2021-01-01T00:00:00Z"}
spec:
  hosts: ["*.api.example.com"]
  http: [{route: [{destination: {host: foo.example.org}}], name: narrow}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: exact, creationTimestamp: "2022-01-01T00:00:00Z"}
spec:
  hosts: [api.example.com]
  http: [{route: [{destination: {host: foo.example.org}}], name: exact}]
"""


@case("wildcard-precedence-exact-then-most-specific", WILD)
def _(cfg):
    # exact host beats wildcards even when newer; the longest wildcard beats a shorter one
    assert [r.name for r in vhost(cfg, "80", "api.example.com").routes] == ["exact"]
    assert [r.name for r in vhost(cfg, "80", "www.api.example.com").routes] == ["narrow"]
    # foo.example.org is not covered by *.com
    assert [r.name for r in vhost(cfg, "80", "foo.example.org").routes] == ["default"]


# --------------------------------------------------------------------------- VirtualService merging and order


TWO_VS = BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: newer, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [reviews]
  gateways: [mesh, gw]
  http: [{name: newer, match: [{uri: {prefix: /new}}], route: [{destination: {host: reviews, subset: v2}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: older, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  hosts: [reviews]
  gateways: [mesh, gw]
  http: [{name: older, match: [{uri: {prefix: /old}}], route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""


@case("sidecar-two-vs-same-host-oldest-wins", TWO_VS)
def _(cfg):
    assert [r.name for r in vhost(cfg, "9080", REVIEWS).routes] == ["older"]


@case("gateway-two-vs-same-host-merged-oldest-first", TWO_VS, node=gateway("default"))
def _(cfg):
    vh = vhost(cfg, "http.8080", REVIEWS)
    assert [r.name for r in vh.routes] == ["older", "newer"]
    assert vh.domains == [REVIEWS, f"{REVIEWS}:8080"]


@case("one-route-per-match-first-match-order-stop-after-catch-all", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - {name: a, headers: {end-user: {exact: jason}}}
    - {name: b, uri: {prefix: /jason}, ignoreUriCase: true}
    route: [{destination: {host: reviews, subset: v2}}]
  - name: rest
    route: [{destination: {host: reviews, subset: v3}}]
  - name: never
    route: [{destination: {host: reviews, subset: v1}}]
""")
def _(cfg):
    routes = vhost(cfg, "9080", REVIEWS).routes
    assert [r.name for r in routes] == ["jason.a", "jason.b", "rest"]
    assert routes[0].match.headers == {"end-user": model.StringMatch(exact="jason")}
    assert routes[1].match.uri == model.StringMatch(prefix="/jason") and routes[1].match.ignore_uri_case
    assert routes[0].route == routes[1].route  # same action
    assert only_dest(routes[2]) == R3


@case("delegate", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [reviews]
  http:
  - name: root
    match: [{uri: {prefix: /api}}]
    timeout: 3s
    delegate: {name: leaf, namespace: team}
  - name: fallback
    route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: leaf, namespace: team}
spec:
  http:
  - name: v2
    match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - name: outside
    match: [{uri: {prefix: /other}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
  - name: rest
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v3}}]
""")
def _(cfg):
    routes = vhost(cfg, "9080", REVIEWS).routes
    # /other conflicts with the root's /api: dropped; the delegate's catch-all gets /api
    assert [r.name for r in routes] == ["root-v2", "root-rest", "fallback"]
    assert routes[0].match.uri == model.StringMatch(prefix="/api/v2")
    assert routes[1].match.uri == model.StringMatch(prefix="/api")
    assert routes[0].route.timeout == 3.0  # inherited from the root
    assert only_dest(routes[1]) == R3
    assert "delegate of VirtualService default/root" in routes[0].origin
    assert routes[0].origin.startswith("VirtualService team/leaf")


@case("default-route-without-virtual-service", BASE)
def _(cfg):
    (r,) = vhost(cfg, "9080", REVIEWS).routes
    assert r.name == "default" and r.origin == "default"
    assert only_dest(r) == R
    assert r.route.timeout is None  # no default timeout
    rp = r.route.retries
    assert (rp.attempts, rp.retry_on, rp.retriable_status_codes) == (
        2, ["connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"], [503])


@case("default-retry-policy-and-overrides", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - {name: default, match: [{uri: {prefix: /a}}], route: [{destination: {host: reviews}}]}
  - {name: disabled, match: [{uri: {prefix: /b}}], retries: {attempts: 0}, route: [{destination: {host: reviews}}]}
  - name: custom
    match: [{uri: {prefix: /c}}]
    retries: {attempts: 5, perTryTimeout: 250ms, retryOn: "gateway-error,503,429", backoff: 50ms}
    route: [{destination: {host: reviews}}]
  - name: attempts-only
    match: [{uri: {prefix: /d}}]
    retries: {attempts: 4}
    route: [{destination: {host: reviews}}]
  - name: timeout
    timeout: 2.5s
    route: [{destination: {host: reviews}}]
""")
def _(cfg):
    r = {x.name: x for x in vhost(cfg, "9080", REVIEWS).routes}
    assert r["default"].route.retries.attempts == 2
    assert r["default"].route.retries.retriable_status_codes == [503]
    assert r["disabled"].route.retries is None
    c = r["custom"].route.retries
    assert (c.attempts, c.per_try_timeout, c.retry_on, c.retriable_status_codes, c.backoff_base_interval) == (
        5, 0.25, ["gateway-error", "retriable-status-codes"], [503, 429], 0.05)
    a = r["attempts-only"].route.retries
    assert a.attempts == 4 and a.retry_on[-1] == "retriable-status-codes" and a.retriable_status_codes == [503]
    assert r["default"].route.timeout is None and r["timeout"].route.timeout == 2.5


@case("weights-are-relative-zero-dropped", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 1}
    - {destination: {host: reviews, subset: v2}, weight: 3}
    - {destination: {host: reviews, subset: v3}, weight: 0}
""")
def _(cfg):
    (r,) = vhost(cfg, "9080", REVIEWS).routes
    assert dests(r) == [(R1, 1), (R2, 3)]


@case("actions-fault-mirror-rewrite-headers-cors", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: all
    match: [{uri: {prefix: /x}}]
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 50}}
      abort: {httpStatus: 418, percentage: {value: 10.5}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 25}
    rewrite: {uri: /y, authority: new.example}
    headers:
      request: {set: {x-a: "1", host: ignored}, add: {x-b: "2"}, remove: [x-c]}
      response: {set: {x-d: "4"}}
    corsPolicy:
      allowOrigins: [{exact: https://a.example}, {regex: "https://.*\\\\.b\\\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-h]
      exposeHeaders: [x-e]
      maxAge: 24h
      allowCredentials: true
    route:
    - destination: {host: reviews, subset: v1}
      headers: {request: {set: {x-dest: v1}}}
  - name: mirrors
    match: [{uri: {prefix: /m}}]
    mirrors:
    - {destination: {host: ratings}}
    - {destination: {host: reviews, subset: v2}, percentage: {value: 5}}
    - {destination: {host: reviews, subset: v3}, percentage: {value: 0}}
    route: [{destination: {host: reviews}}]
  - name: regex-rewrite
    match: [{uri: {regex: "/r/.*"}}]
    rewrite: {uriRegexRewrite: {match: "^/r/(.*)", rewrite: "/\\\\1"}}
    route: [{destination: {host: reviews}}]
  - name: host-header
    match: [{uri: {prefix: /h}}]
    headers: {request: {set: {":authority": h.example}}}
    route: [{destination: {host: reviews}}]
""")
def _(cfg):
    r = {x.name: x for x in vhost(cfg, "9080", REVIEWS).routes}
    a = r["all"]
    assert a.fault == model.Fault(delay=model.FaultDelay(fixed_delay=2.0, percentage=50.0),
                                  abort=model.FaultAbort(http_status=418, percentage=10.5))
    assert a.route.mirrors == [model.Mirror(cluster="outbound|9080||ratings.default.svc.cluster.local", percentage=25.0)]
    assert a.route.rewrite == model.Rewrite(uri="/y", authority="new.example")
    assert a.request_headers == model.HeaderOps(set={"x-a": "1", "x-dest": "v1"}, add={"x-b": "2"}, remove=["x-c"])
    assert a.response_headers == model.HeaderOps(set={"x-d": "4"})
    assert a.cors.allow_origins == [model.StringMatch(exact="https://a.example"),
                                    model.StringMatch(regex="https://.*\\.b\\.example")]
    assert (a.cors.allow_methods, a.cors.allow_headers, a.cors.expose_headers, a.cors.max_age,
            a.cors.allow_credentials) == (["GET", "POST"], ["x-h"], ["x-e"], 86400.0, True)
    m = r["mirrors"].route.mirrors
    assert [(x.cluster, x.percentage) for x in m] == [
        ("outbound|9080||ratings.default.svc.cluster.local", 100.0), (R2, 5.0)]
    assert r["regex-rewrite"].route.rewrite == model.Rewrite(uri_regex=("^/r/(.*)", "/\\1"))
    assert r["regex-rewrite"].match.uri == model.StringMatch(regex="/r/.*")
    assert r["host-header"].route.rewrite == model.Rewrite(authority="h.example")
    assert r["host-header"].request_headers is None


@case("fault-without-percentage-never-fires", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - fault: {delay: {fixedDelay: 1s}, abort: {httpStatus: 503}}
    route: [{destination: {host: reviews}}]
""")
def _(cfg):
    (r,) = vhost(cfg, "9080", REVIEWS).routes
    assert r.fault.delay.percentage == 0.0 and r.fault.abort.percentage == 0.0


@case("redirect-and-direct-response", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: moved
    match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: other.example, redirectCode: 302, scheme: https, port: 8443}
  - name: default-code
    match: [{uri: {exact: /old2}}]
    redirect: {uri: /new2}
  - name: teapot
    match: [{uri: {exact: /tea}}]
    directResponse: {status: 418, body: {string: "I'm a teapot"}}
  - name: bytes
    match: [{uri: {exact: /b}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
""")
def _(cfg):
    r = {x.name: x for x in vhost(cfg, "9080", REVIEWS).routes}
    assert r["moved"].redirect == model.Redirect(uri="/new", authority="other.example", scheme="https",
                                                 port=8443, response_code=302)
    assert r["default-code"].redirect.response_code == 301
    assert r["teapot"].direct_response == model.DirectResponse(status=418, body="I'm a teapot")
    assert r["bytes"].direct_response.body == "hello"
    assert r["teapot"].route is None and r["teapot"].fault is None


@case("match-source-labels-namespace-gateways-port", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - {name: mine, match: [{sourceLabels: {app: client}}], route: [{destination: {host: reviews, subset: v1}}]}
  - {name: notmine, match: [{sourceLabels: {app: other}}], route: [{destination: {host: reviews, subset: v2}}]}
  - {name: myns, match: [{sourceNamespace: default, uri: {prefix: /ns}}], route: [{destination: {host: reviews}}]}
  - {name: otherns, match: [{sourceNamespace: prod}], route: [{destination: {host: reviews}}]}
  - {name: gw-only, match: [{gateways: [some-gw]}], route: [{destination: {host: reviews}}]}
  - {name: mesh-too, match: [{gateways: [mesh], uri: {prefix: /mesh}}], route: [{destination: {host: reviews}}]}
  - {name: port9090, match: [{port: 9090}], route: [{destination: {host: reviews}}]}
  - {name: last, route: [{destination: {host: reviews, subset: v3}}]}
""")
def _(cfg):
    # "mine" matches everything the client sends, so later routes are never reached
    assert [r.name for r in vhost(cfg, "9080", REVIEWS).routes] == ["mine"]


@case("match-filters-when-not-catch-all", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - {name: mine, match: [{sourceLabels: {app: client}, uri: {prefix: /a}}], route: [{destination: {host: reviews}}]}
  - {name: notmine, match: [{sourceLabels: {app: other}}], route: [{destination: {host: reviews}}]}
  - {name: myns, match: [{sourceNamespace: default, uri: {prefix: /ns}}], route: [{destination: {host: reviews}}]}
  - {name: otherns, match: [{sourceNamespace: prod}], route: [{destination: {host: reviews}}]}
  - {name: gw-only, match: [{gateways: [some-gw]}], route: [{destination: {host: reviews}}]}
  - {name: mesh-too, match: [{gateways: [mesh], uri: {prefix: /mesh}}], route: [{destination: {host: reviews}}]}
  - {name: port9090, match: [{port: 9090}], route: [{destination: {host: reviews}}]}
  - {name: port9080, match: [{port: 9080, uri: {prefix: /p}}], route: [{destination: {host: reviews}}]}
  - {name: last, route: [{destination: {host: reviews, subset: v3}}]}
""")
def _(cfg):
    assert [r.name for r in vhost(cfg, "9080", REVIEWS).routes] == [
        "mine", "myns", "mesh-too", "port9080", "last"]


@case("destination-without-port-uses-listener-port", svc("multi", extra="") + """
---
apiVersion: v1
kind: Service
metadata: {name: multi2}
spec:
  selector: {app: multi2}
  ports: [{name: http, port: 9080}, {name: http-admin, port: 8000}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: m}
spec:
  hosts: [multi2]
  http: [{route: [{destination: {host: multi2}}]}]
""")
def _(cfg):
    assert only_dest(vhost(cfg, "9080", "multi2.default.svc.cluster.local").routes[0]) == \
        "outbound|9080||multi2.default.svc.cluster.local"
    assert only_dest(vhost(cfg, "8000", "multi2.default.svc.cluster.local").routes[0]) == \
        "outbound|8000||multi2.default.svc.cluster.local"


@case("unknown-destination-goes-to-blackhole", BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - mirror: {host: nowhere}
    route:
    - {destination: {host: nowhere}, weight: 50}
    - {destination: {host: reviews, subset: nosuchsubset}, weight: 25}
    - {destination: {host: reviews, subset: v1}, weight: 25}
""")
def _(cfg):
    (r,) = vhost(cfg, "9080", REVIEWS).routes
    assert dests(r) == [("BlackHoleCluster", 50), ("BlackHoleCluster", 25), (R1, 25)]
    assert r.route.mirrors == []


# --------------------------------------------------------------------------- DestinationRules


def dr(name: str, ns: str, host: str, extra: str = "", created: str | None = None) -> str:
    ts = f", creationTimestamp: '{created}'" if created else ""
    return f"""
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}{ts}}}
spec:
  host: {host}
{textwrap.indent(textwrap.dedent(extra), '  ')}
"""


PRECEDENCE = (
    svc("reviews", ns="shop")
    + dr("root", "istio-system", "reviews.shop.svc.cluster.local", "trafficPolicy: {loadBalancer: {simple: RANDOM}}")
    + dr("svcns", "shop", "reviews", "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}")
    + dr("client", "client-ns", "reviews.shop.svc.cluster.local",
         "trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}, connectionPool: {tcp: {maxConnections: 7}}}")
    + dr("private", "priv", "reviews.shop.svc.cluster.local",
         "trafficPolicy: {loadBalancer: {simple: RANDOM}}\nexportTo: ['.']")
)
RS = "outbound|9080||reviews.shop.svc.cluster.local"


@case("dr-precedence-client-namespace-first", PRECEDENCE, node=sidecar("client-ns"))
def _(cfg):
    c = cluster(cfg, RS)
    assert c.lb_policy == "LEAST_REQUEST" and c.circuit_breakers.max_connections == 7
    assert c.metadata["origin"].startswith("DestinationRule client-ns/client t.yaml:")


@case("dr-precedence-then-service-namespace", PRECEDENCE, node=sidecar("default"))
def _(cfg):
    c = cluster(cfg, RS)
    assert c.lb_policy == "ROUND_ROBIN" and c.metadata["origin"].startswith("DestinationRule shop/svcns")


@case("dr-precedence-root-namespace-when-service-ns-not-exported",
      PRECEDENCE.replace("trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}",
                         "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n  exportTo: ['.']"),
      node=sidecar("default"))
def _(cfg):
    c = cluster(cfg, RS)
    assert c.lb_policy == "RANDOM" and c.metadata["origin"].startswith("DestinationRule istio-system/root")


@case("dr-private-rule-applies-in-its-own-namespace", PRECEDENCE, node=sidecar("priv"))
def _(cfg):
    assert cluster(cfg, RS).metadata["origin"].startswith("DestinationRule priv/private")


@case("dr-root-namespace-is-configurable",
      svc("reviews", ns="shop") + dr("root", "mesh-root", "reviews.shop.svc.cluster.local",
                                     "trafficPolicy: {loadBalancer: {simple: RANDOM}}"),
      root_namespace="mesh-root")
def _(cfg):
    assert cluster(cfg, RS).lb_policy == "RANDOM"


@case("dr-wildcard-host-most-specific",
      svc("reviews", ns="shop")
      + dr("all", "shop", "'*.svc.cluster.local'", "trafficPolicy: {loadBalancer: {simple: RANDOM}}")
      + dr("shop", "shop", "'*.shop.svc.cluster.local'", "trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}"),
      node=sidecar("shop"))
def _(cfg):
    assert cluster(cfg, RS).lb_policy == "ROUND_ROBIN"


@case("dr-workload-selector", BASE
      + dr("for-client", "default", "reviews",
           "workloadSelector: {matchLabels: {app: client}}\ntrafficPolicy: {loadBalancer: {simple: RANDOM}}")
      + dr("for-other", "default", "reviews",
           "workloadSelector: {matchLabels: {app: other}}\ntrafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}"))
def _(cfg):
    c = cluster(cfg, R)
    assert c.lb_policy == "RANDOM" and c.metadata["origin"].startswith("DestinationRule default/for-client")


@case("dr-merge-same-host-same-namespace",
      svc("reviews") + dr("a", "default", "reviews", "subsets: [{name: v1, labels: {version: v1}}]",
                          created="2020-01-01T00:00:00Z")
      + dr("b", "default", "reviews", """
          trafficPolicy: {loadBalancer: {simple: RANDOM}}
          subsets: [{name: v1, labels: {version: other}}, {name: v2, labels: {version: v2}}]
          """, created="2021-01-01T00:00:00Z"))
def _(cfg):
    assert cluster(cfg, R).lb_policy == "RANDOM"  # first top-level policy set
    assert cluster(cfg, R2).metadata["origin"].startswith("DestinationRule default/a")
    assert cluster(cfg, R2).metadata["merged_from"][0].startswith("DestinationRule default/b")
    ce = [e for e in cfg.endpoints if e.cluster == R1]
    assert ce and ce[0].endpoints == []  # v1 from "a" (labels version=v1), not "b"'s duplicate


@case("dr-port-level-and-subset-merge",
      svc("reviews", extra="") + """
---
apiVersion: v1
kind: Service
metadata: {name: reviews2}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: http-admin, port: 8000}]
""" + dr("reviews2", "default", "reviews2", """
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      connectionPool: {tcp: {maxConnections: 10, connectTimeout: 3s}, http: {http1MaxPendingRequests: 5}}
      outlierDetection: {consecutive5xxErrors: 3}
      portLevelSettings:
      - port: {number: 8000}
        loadBalancer: {simple: ROUND_ROBIN}
        connectionPool: {http: {http2MaxRequests: 50}}
    subsets:
    - name: v1
      labels: {version: v1}
      trafficPolicy:
        loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 60s, path: /}}}
        portLevelSettings:
        - port: {number: 8000}
          outlierDetection: {consecutiveGatewayErrors: 2, interval: 1s}
    - name: v2
      labels: {version: v2}
    """) + pod("r1", "reviews", "10.0.0.1") + pod("r2", "reviews", "10.0.0.2", version="v2"))
def _(cfg):
    h = "reviews2.default.svc.cluster.local"
    top = cluster(cfg, f"outbound|9080||{h}")
    assert top.lb_policy == "RANDOM" and top.connect_timeout == 3.0
    assert (top.circuit_breakers.max_connections, top.circuit_breakers.max_pending_requests) == (10, 5)
    assert top.outlier_detection.consecutive_5xx == 3
    port = cluster(cfg, f"outbound|8000||{h}")
    # port-level fields replace top-level ones whole: connectionPool has only http2MaxRequests
    assert port.lb_policy == "ROUND_ROBIN" and port.connect_timeout == 10.0
    assert port.circuit_breakers.max_requests == 50 and port.circuit_breakers.max_connections == 2**32 - 1
    assert port.outlier_detection.consecutive_5xx == 3  # not overridden at port level
    s1 = cluster(cfg, f"outbound|9080|v1|{h}")
    assert s1.lb_policy == "RING_HASH" and s1.hash_policy == model.HashPolicy(cookie="user", cookie_ttl=60.0,
                                                                              cookie_path="/")
    assert s1.circuit_breakers.max_connections == 10  # inherited from the host policy
    assert s1.metadata == {"origin": s1.metadata["origin"], "service": h, "port": 9080, "subset": "v1"}
    s1p = cluster(cfg, f"outbound|8000|v1|{h}")
    assert s1p.outlier_detection.consecutive_gateway_failure == 2 and s1p.outlier_detection.interval == 1.0
    assert s1p.circuit_breakers.max_requests == 50  # host port-level, then subset
    s2 = cluster(cfg, f"outbound|9080|v2|{h}")
    assert s2.lb_policy == "RANDOM"
    assert endpoints(cfg, f"outbound|9080|v1|{h}") == [("10.0.0.1", 9080)]
    assert endpoints(cfg, f"outbound|9080|v2|{h}") == [("10.0.0.2", 9080)]
    assert endpoints(cfg, f"outbound|9080||{h}") == [("10.0.0.1", 9080), ("10.0.0.2", 9080)]


@case("load-balancer-and-outlier-defaults", svc("a") + svc("b") + svc("c") + svc("d") + svc("e")
      + dr("b", "default", "b", "trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 1021}}}}")
      + dr("c", "default", "c", "trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 64}}}, outlierDetection: {}}")
      + dr("d", "default", "d", """
          trafficPolicy:
            loadBalancer: {consistentHash: {httpQueryParameterName: q}}
            outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 4, baseEjectionTime: 1m,
                               maxEjectionPercent: 50, minHealthPercent: 20, splitExternalLocalOriginErrors: true}
            connectionPool: {http: {maxRetries: 9, maxRequestsPerConnection: 1, idleTimeout: 30s}}
          """)
      + dr("e", "default", "e", "trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}"))
def _(cfg):
    a = cluster(cfg, "outbound|9080||a.default.svc.cluster.local")
    assert a.lb_policy == "LEAST_REQUEST" and a.connect_timeout == 10.0 and a.outlier_detection is None
    assert a.type == "EDS" and a.protocol == "http1" and a.metadata["origin"] == "default"
    b = cluster(cfg, "outbound|9080||b.default.svc.cluster.local")
    assert (b.lb_policy, b.maglev_table_size, b.hash_policy) == ("MAGLEV", 1021, model.HashPolicy(header_name="x-user"))
    c = cluster(cfg, "outbound|9080||c.default.svc.cluster.local")
    assert (c.lb_policy, c.ring_size, c.hash_policy.use_source_ip) == ("RING_HASH", 64, True)
    assert c.outlier_detection == model.OutlierDetection(consecutive_5xx=5, consecutive_gateway_failure=None,
                                                         interval=10.0, base_ejection_time=30.0)
    d = cluster(cfg, "outbound|9080||d.default.svc.cluster.local")
    assert (d.lb_policy, d.ring_size, d.hash_policy.query_parameter) == ("RING_HASH", 1024, "q")
    od = d.outlier_detection
    assert (od.consecutive_5xx, od.consecutive_gateway_failure, od.base_ejection_time, od.max_ejection_percent,
            od.min_health_percent, od.split_external_local_origin_errors, od.consecutive_local_origin_failure) == (
        None, 4, 60.0, 50, 20, True, 5)
    cb = d.circuit_breakers
    assert (cb.max_retries, cb.max_requests_per_connection, cb.idle_timeout) == (9, 1, 30.0)
    e = cluster(cfg, "outbound|9080||e.default.svc.cluster.local")
    assert (e.type, e.lb_policy) == ("ORIGINAL_DST", "PASSTHROUGH")
    assert all(x.cluster != e.name for x in cfg.endpoints)


@case("upstream-tls-seam", BASE + dr("tls", "default", "ratings", "trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: r.example}}"))
def _(cfg):
    assert cluster(cfg, "outbound|9080||ratings.default.svc.cluster.local").tls == model.UpstreamTls(
        mode="ISTIO_MUTUAL", sni="r.example")
    assert cluster(cfg, R).tls is None


# --------------------------------------------------------------------------- exportTo


EXPORTS = (
    svc("hidden", ns="team", extra="")
    .replace("metadata: {name: hidden, namespace: team}",
             "metadata: {name: hidden, namespace: team, annotations: {networking.istio.io/exportTo: '.'}}")
    + svc("shared", ns="team")
    + """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se, namespace: team}
spec:
  hosts: [private.example.com]
  exportTo: ["."]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private-vs, namespace: team}
spec:
  hosts: [shared]
  exportTo: ["."]
  http: [{name: private, route: [{destination: {host: shared}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: for-default, namespace: other}
spec:
  hosts: [shared.team.svc.cluster.local]
  exportTo: ["default"]
  http: [{name: exported, route: [{destination: {host: shared.team.svc.cluster.local}}]}]
""")


@case("export-to-from-another-namespace", EXPORTS, node=sidecar("default"))
def _(cfg):
    names = {c.name for c in cfg.clusters}
    assert "outbound|9080||hidden.team.svc.cluster.local" not in names
    assert "outbound|80||private.example.com" not in names
    assert "outbound|9080||shared.team.svc.cluster.local" in names
    assert [r.name for r in vhost(cfg, "9080", "shared.team.svc.cluster.local").routes] == ["exported"]


@case("export-to-inside-the-namespace", EXPORTS, node=sidecar("team"))
def _(cfg):
    names = {c.name for c in cfg.clusters}
    assert "outbound|9080||hidden.team.svc.cluster.local" in names
    assert "outbound|80||private.example.com" in names
    assert [r.name for r in vhost(cfg, "9080", "shared").routes] == ["private"]


# --------------------------------------------------------------------------- Sidecar scoping


SCOPED = (
    svc("a", ns="app") + svc("b", ns="app") + svc("c", ns="other") + svc("d", ns="istio-system")
    + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: c-route, namespace: other}
spec:
  hosts: [c.other.svc.cluster.local]
  http: [{name: c-route, route: [{destination: {host: c.other.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: app}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: special, namespace: app}
spec:
  workloadSelector: {labels: {role: special}}
  egress:
  - hosts: ["other/c.other.svc.cluster.local", "./b.app.svc.cluster.local"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
  - port: {number: 9080, protocol: HTTP, name: http}
    hosts: ["*/a.app.svc.cluster.local", "*/c.other.svc.cluster.local"]
""")


def outbound_hosts(cfg):
    return sorted({c.metadata["service"] for c in cfg.clusters if c.name.startswith("outbound|")})


@case("sidecar-namespace-default", SCOPED, node=sidecar("app"))
def _(cfg):
    assert outbound_hosts(cfg) == ["a.app.svc.cluster.local", "b.app.svc.cluster.local",
                                   "d.istio-system.svc.cluster.local"]
    assert listener(cfg, "virtualOutbound").default_filter_chain.tcp.cluster == "PassthroughCluster"
    assert table(cfg, "9080").virtual_hosts[-1].name == "allow_any"


@case("sidecar-workload-selector-and-registry-only", SCOPED, node=sidecar("app", {"app": "x", "role": "special"}))
def _(cfg):
    assert outbound_hosts(cfg) == ["b.app.svc.cluster.local", "c.other.svc.cluster.local"]
    # the VirtualService of namespace "other" is imported through other/c...
    assert [r.name for r in vhost(cfg, "9080", "c.other.svc.cluster.local").routes] == ["c-route"]
    assert listener(cfg, "virtualOutbound").default_filter_chain.tcp.cluster == "BlackHoleCluster"
    last = table(cfg, "9080").virtual_hosts[-1]
    assert last.name == "block_all" and last.routes[0].direct_response.status == 502


@case("sidecar-root-namespace-default-with-port-listener", SCOPED, node=sidecar("third"))
def _(cfg):
    # port 9080 has its own egress listener: only a and c; d (istio-system) only on other ports
    assert outbound_hosts(cfg) == ["a.app.svc.cluster.local", "c.other.svc.cluster.local"]


@case("sidecar-root-default-applies-in-root-namespace", SCOPED, node=sidecar("istio-system"))
def _(cfg):
    # the root Sidecar also applies to its own namespace ("./*" = istio-system)
    assert "d.istio-system.svc.cluster.local" not in outbound_hosts(cfg)  # not on port 9080 listener
    assert outbound_hosts(cfg) == ["a.app.svc.cluster.local", "c.other.svc.cluster.local"]


@case("no-sidecar-resource-sees-everything", SCOPED.replace("kind: Sidecar", "kind: ConfigMap"), node=sidecar("x"))
def _(cfg):
    assert len(outbound_hosts(cfg)) == 4


# --------------------------------------------------------------------------- gateways


GW = BASE + svc("productpage") + """
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["default/*.example.com", "shop/*"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cert}
  - port: {number: 80, name: http-redirect, protocol: HTTP}
    hosts: ["*.example.com"]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal, namespace: default}
spec:
  selector: {istio: other}
  servers: [{port: {number: 9000, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: site}
spec:
  hosts: [www.example.com, "*.shop.example.com", productpage]
  gateways: [istio-system/public]
  http:
  - {name: site, route: [{destination: {host: productpage}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wide}
spec:
  hosts: ["*"]
  gateways: [istio-system/public, mesh]
  http:
  - {name: wide, match: [{gateways: [istio-system/public], uri: {prefix: /wide}}], route: [{destination: {host: reviews}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shopvs, namespace: shop}
spec:
  hosts: [buy.example.com]
  gateways: [istio-system/public]
  http: [{name: shop, route: [{destination: {host: productpage.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: internal-only}
spec:
  hosts: [internal.example.com]
  gateways: [internal]
  http: [{name: internal, route: [{destination: {host: reviews}}]}]
"""


@case("gateway-servers-bound-virtual-services-host-intersection", GW, node=gateway())
def _(cfg):
    assert [x.name for x in cfg.listeners] == ["0.0.0.0_80", "0.0.0.0_8080"]  # HTTPS: TLS seam, skipped
    lst = listener(cfg, "0.0.0.0_8080")
    hcm = lst.default_filter_chain.http
    assert hcm.route_config == "http.8080" and hcm.use_remote_address
    vhs = {vh.name: vh for vh in table(cfg, "http.8080").virtual_hosts}
    # default/*.example.com admits VirtualServices of "default" only; shop/* admits "shop"'s
    assert sorted(vhs) == ["*.example.com:8080", "*.shop.example.com:8080", "buy.example.com:8080",
                           "www.example.com:8080"]
    assert [r.name for r in vhs["www.example.com:8080"].routes] == ["site"]
    assert vhs["www.example.com:8080"].domains == ["www.example.com", "www.example.com:8080"]
    assert [r.name for r in vhs["*.example.com:8080"].routes] == ["wide"]  # VS "*" narrowed to the server host
    assert [r.name for r in vhs["buy.example.com:8080"].routes] == ["shop"]
    assert only_dest(vhs["www.example.com:8080"].routes[0]) == "outbound|9080||productpage.default.svc.cluster.local"
    red = table(cfg, "http.80").virtual_hosts
    assert {vh.name for vh in red} >= {"*.example.com:80"}
    assert all(vh.routes[0].redirect == model.Redirect(scheme="https", response_code=301) for vh in red)


@case("gateway-not-selected-gets-nothing", GW, node=gateway(labels={"istio": "nothing"}))
def _(cfg):
    assert cfg.listeners == [] and cfg.routes == []


@case("gateway-mesh-binding-on-sidecars", GW)
def _(cfg):
    # "wide" binds mesh too, but its only match is for the gateway: no routes for sidecars,
    # so the services keep their default routes
    assert [r.name for r in vhost(cfg, "9080", REVIEWS).routes] == ["default"]


# --------------------------------------------------------------------------- inbound / outbound listeners


WORKLOAD = svc("reviews", extra="").replace("ports: [{name: http, port: 9080}]",
                                            "ports: [{name: http, port: 9080, targetPort: web}, {name: tcp-db, port: 5432}]") + """
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, labels: {app: reviews, version: v1}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.1.1.1}
""" + svc("ratings", ip="10.96.0.9", extra="").replace("ports: [{name: http, port: 9080}]",
                                                       "ports: [{name: tcp, port: 3306}]")
REVIEWS_NODE = dict(name="reviews-1", labels={"app": "reviews", "version": "v1"}, ips=["10.1.1.1"])


@case("inbound-redirect", WORKLOAD, node=sidecar(**REVIEWS_NODE))
def _(cfg):
    inb = listener(cfg, "virtualInbound")
    assert (inb.port, inb.use_original_dst) == (15006, True)
    chains = {c.destination_port: c for c in inb.filter_chains}
    assert sorted(chains) == [5432, 8080]  # the named targetPort "web" resolved on the pod
    assert chains[8080].http.route_config == "inbound|8080||" and chains[8080].http.traffic_direction == "INBOUND"
    assert chains[5432].tcp.cluster == "inbound|5432||"
    assert inb.default_filter_chain.tcp.cluster == "InboundPassthroughCluster"
    assert endpoints(cfg, "inbound|8080||") == [("127.0.0.1", 8080)]
    c = cluster(cfg, "inbound|8080||")
    assert c.type == "STATIC" and c.metadata["service"] == REVIEWS
    (vh,) = table(cfg, "inbound|8080||").virtual_hosts
    assert vh.name == "inbound|http|8080" and vh.domains == ["*"]
    r = vh.routes[0]
    assert r.route.timeout is None and r.route.retries.retry_on == ["reset-before-request"]


@case("inbound-none-mode", WORKLOAD, node=sidecar(interception="NONE", app_ports={8080: 18080}, **REVIEWS_NODE))
def _(cfg):
    assert [x.name for x in cfg.listeners] == ["10.1.1.1_5432", "10.1.1.1_8080", "127.0.0.1_15001"]
    web = listener(cfg, "10.1.1.1_8080")
    assert (web.address, web.port, web.use_original_dst) == ("10.1.1.1", 8080, False)
    assert web.default_filter_chain.http.route_config == "inbound|8080||"
    assert endpoints(cfg, "inbound|8080||") == [("127.0.0.1", 18080)]
    assert endpoints(cfg, "inbound|5432||") == [("127.0.0.1", 5432)]


@case("outbound-redirect-chains", WORKLOAD + svc("nocip", port=3306, port_name="mysql"))
def _(cfg):
    out = listener(cfg, "virtualOutbound")
    assert (out.port, out.use_original_dst) == (15001, True)
    chains = [(c.name, c.destination_port, c.destination_ips, c.http.route_config if c.http else c.tcp.cluster)
              for c in out.filter_chains]
    assert chains == [
        ("10.96.0.9_3306", 3306, ["10.96.0.9/32"], "outbound|3306||ratings.default.svc.cluster.local"),
        ("0.0.0.0_3306", 3306, [], "outbound|3306||nocip.default.svc.cluster.local"),
        ("0.0.0.0_5432", 5432, [], "outbound|5432||reviews.default.svc.cluster.local"),
        ("0.0.0.0_9080", 9080, [], "9080"),
    ]
    assert out.default_filter_chain.tcp.cluster == "PassthroughCluster"
    assert cluster(cfg, "outbound|3306||ratings.default.svc.cluster.local").protocol == "tcp"
    assert [r.name for r in cfg.routes] == ["9080"]


@case("outbound-none-mode-http-proxy", svc("reviews", ip="10.0.0.5") + svc("web", port=80)
      + svc("multi", extra="").replace("ports: [{name: http, port: 9080}]",
                                       "ports: [{name: http, port: 9080}, {name: http-admin, port: 8000}]"),
      node=sidecar(interception="NONE"))
def _(cfg):
    lst = listener(cfg, "127.0.0.1_15001")
    assert (lst.address, lst.port) == ("127.0.0.1", 15001)
    assert lst.default_filter_chain.http.route_config == "http_proxy"
    assert [r.name for r in cfg.routes] == ["http_proxy"]
    vhs = {vh.name: vh for vh in table(cfg, "http_proxy").virtual_hosts}
    assert vhs[f"{REVIEWS}:9080"].domains == [f"{REVIEWS}:9080", "reviews:9080", "reviews.default.svc:9080",
                                                "reviews.default:9080", "10.0.0.5:9080"]
    assert "web" in vhs["web.default.svc.cluster.local:80"].domains  # port 80 keeps port-less forms
    assert "multi:8000" in vhs["multi.default.svc.cluster.local:8000"].domains
    assert "multi:9080" in vhs["multi.default.svc.cluster.local:9080"].domains
    assert not any(vh.name == "allow_any" for vh in vhs.values())
    assert "InboundPassthroughCluster" not in {c.name for c in cfg.clusters}


# --------------------------------------------------------------------------- ServiceEntries


@case("service-entries", """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static}
spec:
  hosts: [db.internal]
  addresses: [240.0.0.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.9.0.1}, {address: 10.9.0.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: any}
spec:
  hosts: ["*.wild.com"]
  resolution: NONE
  ports: [{number: 8080, name: http, protocol: HTTP}]
""")
def _(cfg):
    assert endpoints(cfg, "outbound|5432||db.internal") == [("10.9.0.1", 5432), ("10.9.0.2", 5432)]
    chain = next(c for c in listener(cfg, "virtualOutbound").filter_chains if c.destination_port == 5432)
    assert chain.destination_ips == ["240.0.0.10/32"]
    assert endpoints(cfg, "outbound|80||api.example.com") == [("api.example.com", 80)]
    assert vhost(cfg, "80", "api.example.com").domains == ["api.example.com", "api.example.com:80"]
    wild = cluster(cfg, "outbound|8080||*.wild.com")
    assert (wild.type, wild.lb_policy) == ("ORIGINAL_DST", "PASSTHROUGH")
    assert vhost(cfg, "8080", "*.wild.com").routes[0].name == "default"


# --------------------------------------------------------------------------- properties


def test_deterministic_and_sorted():
    text = GW + WORKLOAD + EXPORTS
    view, reg = build(text)
    node = sidecar(**REVIEWS_NODE)
    a = translate(view, reg, node)
    view2, reg2 = build(text)
    b = translate(view2, reg2, node)
    assert msgspec.json.encode(a) == msgspec.json.encode(b)
    assert a.version == "0" and a.node == node
    for items, key in ((a.listeners, "name"), (a.routes, "name"), (a.clusters, "name"), (a.endpoints, "cluster")):
        names = [getattr(x, key) for x in items]
        assert names == sorted(names)


def test_cached_translation_equals_fresh_and_does_not_leak():
    view, reg = build(SCOPED + WORKLOAD)
    n1 = sidecar("app", {"app": "x", "role": "special"})
    n2 = sidecar("app")
    first = msgspec.json.encode(translate(view, reg, n1))
    translate(view, reg, n2)
    again = translate(view, reg, n1)
    assert msgspec.json.encode(again) == first
    # mutating a returned snapshot's lists does not change the next one
    again.clusters.clear()
    assert msgspec.json.encode(translate(view, reg, n1)) == first
    # a registry not built from this view still works (no shared cache)
    view2, _ = build(SCOPED + WORKLOAD)
    assert msgspec.json.encode(translate(view2, reg, n1)) == first


def test_view_from_store_objects_and_origins():
    from pilotfish.config import MemoryBackend, Store

    store = Store(MemoryBackend())
    store.apply(load_text(BASE + textwrap.dedent("""
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http: [{route: [{destination: {host: reviews, subset: v2}}]}]
        """), "reviews.yaml"))
    view = ConfigView.build(store.list())
    cfg = translate(view, Registry.build(view), sidecar())
    (r,) = vhost(cfg, "9080", REVIEWS).routes
    assert r.origin.startswith("VirtualService default/reviews reviews.yaml:")
    assert cluster(cfg, R2).metadata["origin"].startswith("DestinationRule default/reviews reviews.yaml:")


# --------------------------------------------------------------------------- more rows (registered late)


@case("vs-host-that-is-no-service-on-port-80", svc("web", port=80) + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext}
spec:
  hosts: [web, bookinfo.com]
  http: [{name: ext, route: [{destination: {host: web}}]}]
""")
def _(cfg):
    vh = vhost(cfg, "80", "bookinfo.com")
    assert vh.name == "bookinfo.com:80" and vh.domains == ["bookinfo.com", "bookinfo.com:80"]
    assert [r.name for r in vh.routes] == ["ext"]
    assert [r.name for r in vhost(cfg, "80", "web").routes] == ["ext"]


@case("sidecar-vs-tcp-routes", BASE.replace("{name: http, port: 9080}]\n\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings",
                                           "{name: http, port: 9080}]\n\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings")
      + svc("db", port=3306, port_name="tcp", ip="10.96.1.1") + dr("db", "default", "db", "subsets: [{name: primary, labels: {role: primary}}]") + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 3306}]
    route:
    - {destination: {host: db, subset: primary}, weight: 80}
    - {destination: {host: db}, weight: 20}
""")
def _(cfg):
    chain = next(c for c in listener(cfg, "virtualOutbound").filter_chains if c.destination_port == 3306)
    assert chain.tcp.cluster == "outbound|3306|primary|db.default.svc.cluster.local"
    assert chain.destination_ips == ["10.96.1.1/32"]


@case("gateway-tcp-server-and-vs-visibility", svc("db", port=3306, port_name="tcp") + svc("web", port=80) + """
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  tcp: [{match: [{port: 31400}], route: [{destination: {host: db, port: {number: 3306}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private-web}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  exportTo: ["."]
  http: [{route: [{destination: {host: web}}]}]
""", node=gateway())
def _(cfg):
    tcp = listener(cfg, "0.0.0.0_31400").default_filter_chain.tcp
    assert tcp.cluster == "outbound|3306||db.default.svc.cluster.local"
    # the http VirtualService is not exported to the gateway's namespace
    assert table(cfg, "http.80").virtual_hosts == []


@case("gateway-destination-port-from-single-port-service", svc("web", port=8000) + """
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["web.example.com"]
  gateways: [gw]
  http: [{route: [{destination: {host: web}}]}]
""", node=gateway(ns="default"))
def _(cfg):
    (r,) = vhost(cfg, "http.80", "web.example.com").routes
    assert only_dest(r) == "outbound|8000||web.default.svc.cluster.local"
