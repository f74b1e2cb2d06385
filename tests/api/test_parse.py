"""Schema-level parsing: typed objects, defaults, every schema error with its path and line."""

import pytest

from pilotfish.api import parse, try_parse, validate
from pilotfish.api.issues import Issue
from pilotfish.api.loader import load_text
from pilotfish.api.parsing import ParseError
from pilotfish.api.types import k8s, networking, security

from .conftest import one

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
      weight: 90
    timeout: 1.5s
    retries:
      attempts: 3
      perTryTimeout: 500ms
"""


def test_typed_virtual_service():
    vs = parse(one(VS))
    assert isinstance(vs, networking.VirtualService)
    assert vs.api_version == "networking.istio.io/v1"
    assert vs.metadata.name == "reviews"
    http = vs.spec.http[0]
    assert http.match[0].headers["end-user"].exact == "jason"
    assert http.route[0].destination.subset == "v2"
    assert http.route[0].weight == 90
    assert http.timeout == "1.5s"
    assert http.retries.attempts == 3
    # omitted fields take Istio's (protobuf) defaults
    assert http.fault is None and http.redirect is None
    assert http.match[0].ignore_uri_case is False
    assert vs.spec.gateways == []


def test_all_api_versions_share_a_schema():
    for version in ("v1", "v1beta1", "v1alpha3"):
        assert parse(one(VS.replace("networking.istio.io/v1", f"networking.istio.io/{version}")))


def test_kubernetes_defaults():
    svc = parse(one("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n"))
    assert isinstance(svc, k8s.Service)
    assert svc.spec.type == "ClusterIP"
    assert svc.spec.ports[0].protocol == "TCP"
    assert svc.spec.ports[0].effective_target_port == 80
    d = parse(one("""\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      containers:
      - name: c
        image: i
        readinessProbe: {httpGet: {port: http, path: /ready}}
"""))
    assert d.spec.replicas == 1
    probe = d.spec.template.spec.containers[0].readiness_probe
    assert (probe.period_seconds, probe.timeout_seconds, probe.failure_threshold) == (10, 1, 3)
    assert probe.http_get.port == "http"


def test_int_or_string_target_port():
    svc = parse(one("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: http}]}\n"))
    assert svc.spec.ports[0].target_port == "http"


def test_yaml_integer_map_keys_are_strings():
    pa = parse(one("""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p}
spec:
  selector: {matchLabels: {app: a}}
  portLevelMtls:
    8080: {mode: DISABLE}
"""))
    assert isinstance(pa, security.PeerAuthentication)
    assert pa.spec.port_mtls() == {8080: security.PeerMTLS(mode="DISABLE")}


def test_secret_values():
    sec = parse(one("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\ndata: {tls.crt: aGVsbG8=}\nstringData: {tls.key: k}\n"))
    assert sec.value("tls.crt") == b"hello"
    assert sec.value("tls.key") == b"k"
    assert sec.value("nope") is None


def _errors(text: str) -> list[Issue]:
    return [i for i in validate(one(text)) if i.level == "Error"]


def test_schema_errors_name_path_and_line():
    text = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
      weight: "ninety"
    timout: 5s
"""
    errs = _errors(text)
    by_path = {e.path: e for e in errs}
    assert set(by_path) == {"spec.http[0].route[0].weight", "spec.http[0].timout"}
    w = by_path["spec.http[0].route[0].weight"]
    assert w.line == 12 and w.file == "t.yaml"
    assert "must be an integer" in w.message
    t = by_path["spec.http[0].timout"]
    assert t.line == 13
    assert 'unknown field "timout"' in t.message and 'did you mean "timeout"' in t.message
    assert str(w).startswith("Error: VirtualService default/reviews (t.yaml:12): spec.http[0].route[0].weight: ")


def test_all_schema_errors_are_reported_not_just_the_first():
    errs = _errors("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: 42
  trafficPolicy:
    loadBalancer: {simple: FASTEST}
    connectionPool: {tcp: {connectTimeout: soon}}
  subsets:
  - labels: {version: v1}
""")
    paths = sorted(e.path for e in errs)
    assert paths == [
        "spec.host",
        "spec.subsets[0].name",
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "spec.trafficPolicy.loadBalancer.simple",
    ]
    msgs = {e.path: e.message for e in errs}
    assert "required field is missing" in msgs["spec.subsets[0].name"]
    assert 'unsupported value \'FASTEST\'' in msgs["spec.trafficPolicy.loadBalancer.simple"]
    assert '"ROUND_ROBIN"' in msgs["spec.trafficPolicy.loadBalancer.simple"]
    assert "invalid duration 'soon'" in msgs["spec.trafficPolicy.connectionPool.tcp.connectTimeout"]


@pytest.mark.parametrize(
    "snippet, path, fragment",
    [
        ("uri: {exact: /a, prefix: /b}", "spec.http[0].match[0].uri", "only one of exact, prefix, regex"),
        ("port: 70000", "spec.http[0].match[0].port", None),
        ("port: -1", "spec.http[0].match[0].port", "out of range"),
        ("port: true", "spec.http[0].match[0].port", "must be an integer"),
        ("ignoreUriCase: 'yes'", "spec.http[0].match[0].ignoreUriCase", "must be a boolean"),
        ("sourceLabels: [a]", "spec.http[0].match[0].sourceLabels", "must be a map"),
        ("gateways: mesh", "spec.http[0].match[0].gateways", "must be a list"),
    ],
)
def test_match_field_types(snippet, path, fragment):
    text = f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: r}}
spec:
  hosts: [r]
  http:
  - match:
    - {snippet}
    route:
    - destination: {{host: r}}
"""
    errs = _errors(text)
    assert [e.path for e in errs][:1] == [path]
    if fragment:
        assert fragment in errs[0].message


def test_durations_below_a_millisecond_are_refused_by_the_schema():
    errs = _errors("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - route: [{destination: {host: r}}]
    timeout: 0s
""")
    assert [(e.path, e.message) for e in errs] == [("spec.http[0].timeout", "'0s': must be a valid duration greater than 1ms")]


def test_null_values_are_unset():
    vs = parse(one("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, labels: null}
spec:
  hosts: [r]
  gateways:
  http:
  - route: [{destination: {host: r}}]
    timeout:
"""))
    assert vs.spec.gateways == [] and vs.spec.http[0].timeout is None


def test_null_list_item_is_an_error():
    errs = _errors("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r, null]\n  http: [{route: [{destination: {host: r}}]}]\n")
    assert [(e.path, e.message) for e in errs] == [("spec.hosts[1]", "must not be null")]


def test_unknown_fields_in_pod_templates_are_warnings():
    issues = validate(one("""\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      frobnicate: true
      containers:
      - name: c
        image: i
        imagePullPolicy: Always
        volumeMounts: [{name: v, mountPath: /v}]
        sparkles: 3
      volumes: [{name: v, emptyDir: {}}]
"""))
    assert [i.level for i in issues] == ["Warning", "Warning"]
    assert {i.path for i in issues} == {"spec.template.spec.frobnicate", "spec.template.spec.containers[0].sparkles"}


def test_unknown_fields_in_istio_specs_are_errors():
    errs = _errors("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {selector: {a: b}, sevrers: []}\n")
    assert errs[0].path == "spec.sevrers" and 'did you mean "servers"' in errs[0].message


def test_document_problems():
    (res,) = load_text("metadata: {name: x}\n", "f.yaml")
    assert [i.message for i in validate(res)] == ["not a Kubernetes resource: apiVersion and kind are missing"]
    (res,) = load_text("apiVersion: v1\nmetadata: {name: x}\n", "f.yaml")
    assert [(i.path, i.level) for i in validate(res)] == [("kind", "Error")]


def test_unknown_kind_is_a_warning_and_skipped():
    res = one("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    obj, issues = try_parse(res)
    assert obj is None
    assert [(i.level, i.kind) for i in issues] == [("Warning", "Widget")]
    assert "unknown kind 'Widget'" in issues[0].message and "skipped" in issues[0].message
    with pytest.raises(ParseError):
        parse(res)


def test_known_kind_wrong_group_hints_the_right_one():
    res = one("apiVersion: networking.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\n")
    (w,) = validate(res)
    assert w.level == "Warning" and "security.istio.io/v1" in w.message


def test_known_kind_unknown_version_is_an_error():
    (e,) = validate(one("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: r}\n"))
    assert e.level == "Error" and e.path == "apiVersion" and "networking.istio.io/v1" in e.message


def test_lines_inside_a_list_document():
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: ok}
- apiVersion: v1
  kind: Namespace
  metadata:
    name: Not_OK
"""
    a, b = load_text(text, "l.yaml")
    assert (a.line, b.line) == (4, 7)
    (e,) = validate(b)
    assert (e.path, e.line) == ("metadata.name", 10)
