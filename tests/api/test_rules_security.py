"""Semantic rules of security.istio.io and telemetry.istio.io kinds."""

import pytest

from .helpers import doc, errors_of, has, warnings_of


def ap(spec, **kw):
    return doc("security.istio.io/v1", "AuthorizationPolicy", spec, **kw)


def pa(spec, **kw):
    return doc("security.istio.io/v1", "PeerAuthentication", spec, **kw)


def ra(spec, **kw):
    return doc("security.istio.io/v1", "RequestAuthentication", spec, **kw)


def tel(spec, **kw):
    return doc("telemetry.istio.io/v1", "Telemetry", spec, **kw)


SEL = {"matchLabels": {"app": "a"}}

AP_ERRORS = [
    ({"action": "DENY"}, "spec.rules", "DENY action without `rules` is meaningless"),
    ({"action": "CUSTOM", "rules": [{}]}, "spec.provider.name", "`provider.name` must not be empty"),
    ({"action": "CUSTOM"}, "spec.rules", "CUSTOM action without `rules`"),
    ({"action": "ALLOW", "provider": {"name": "p"}, "rules": [{}]}, "spec.provider", "must not be with non CUSTOM action"),
    ({"action": "CUSTOM", "provider": {"name": "p"}, "rules": [{"from": [{"source": {"principals": ["a"]}}]}]}, "spec.rules[0].from[0].source.principals", "not supported with CUSTOM action"),
    ({"action": "REJECT"}, "spec.action", "unsupported value"),
    ({"rules": [{"from": []}]}, "spec.rules[0].from", "`from` must not be empty"),
    ({"rules": [{"from": [{}]}]}, "spec.rules[0].from[0].source", "must not be nil"),
    ({"rules": [{"from": [{"source": {}}]}]}, "spec.rules[0].from[0].source", "`from.source` must not be empty"),
    ({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/99"]}}]}]}, "spec.rules[0].from[0].source.ipBlocks[0]", "bad CIDR range"),
    ({"rules": [{"from": [{"source": {"remoteIpBlocks": ["nope"]}}]}]}, "spec.rules[0].from[0].source.remoteIpBlocks[0]", "bad IP address"),
    ({"rules": [{"from": [{"source": {"principals": [""]}}]}]}, "spec.rules[0].from[0].source.principals", "empty value not allowed"),
    ({"rules": [{"from": [{"source": {"serviceAccounts": ["a/b/c"]}}]}]}, "spec.rules[0].from[0].source.serviceAccounts", "expected format"),
    ({"rules": [{"from": [{"source": {"serviceAccounts": ["ns/sa"], "namespaces": ["ns"]}}]}]}, "spec.rules[0].from[0].source", "Cannot set serviceAccounts with namespaces or principals"),
    ({"rules": [{"to": []}]}, "spec.rules[0].to", "`to` must not be empty"),
    ({"rules": [{"to": [{"operation": {}}]}]}, "spec.rules[0].to[0].operation", "must not be empty"),
    ({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}, "spec.rules[0].to[0].operation.ports[0]", "bad port"),
    ({"rules": [{"to": [{"operation": {"paths": ["/a/{**}/b/{*}"]}}]}]}, "spec.rules[0].to[0].operation.paths", "{**} is not the last operator"),
    ({"rules": [{"to": [{"operation": {"paths": ["/a/{x}"]}}]}]}, "spec.rules[0].to[0].operation.paths", "beyond a supported path template"),
    ({"rules": [{"when": [{"key": "request.headers[x-a]"}]}]}, "spec.rules[0].when[0]", "at least one of `values` or `notValues`"),
    ({"rules": [{"when": [{"key": "request.magic", "values": ["a"]}]}]}, "spec.rules[0].when[0].values", "unknown attribute: request.magic"),
    ({"rules": [{"when": [{"key": "request.headers", "values": ["a"]}]}]}, "spec.rules[0].when[0].values", "should have format a[b]"),
    ({"rules": [{"when": [{"key": "source.ip", "values": ["1.2.3.4.5"]}]}]}, "spec.rules[0].when[0].values", "bad IP address"),
    ({"rules": [{"when": [{"key": "destination.port", "values": ["99999"]}]}]}, "spec.rules[0].when[0].values", "bad port"),
    ({"rules": [{"when": [{"key": "destination.labels[app]", "values": ["a"]}]}]}, "spec.rules[0].when[0].values", "replaced by the workload selector"),
    ({"rules": [{"when": [{"values": ["a"]}]}]}, "spec.rules[0].when[0].key", "required field is missing"),
    ({"selector": SEL, "targetRef": {"kind": "Service", "name": "s"}}, "spec", "only one of targetRefs or workloadSelector"),
    ({"targetRef": {"kind": "Deployment", "group": "apps", "name": "d"}}, "spec.targetRef", "targetRef must be to one of"),
    ({"targetRef": {"kind": "Service", "name": "s", "namespace": "other"}}, "spec.targetRef.namespace", "cross namespace referencing is not supported"),
    ({"selector": {"matchLabels": {"app": "a*"}}}, "spec.selector.matchLabels[app]", "wildcard is not supported"),
]


@pytest.mark.parametrize("spec, path, fragment", AP_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(AP_ERRORS)])
def test_authorization_policy_errors(spec, path, fragment):
    found = errors_of(ap(spec))
    assert has(found, path, fragment), found


def test_authorization_policy_valid_forms():
    good = [
        {},  # allow nothing... (ALLOW with no rules denies all) - valid
        {"action": "DENY", "rules": [{}]},
        {"selector": SEL, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/productpage"]}}],
             "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*", "/v1/{*}/x/{**}"], "ports": ["9080"]}}],
             "when": [{"key": "request.auth.claims[iss]", "values": ["https://issuer"]},
                      {"key": "source.ip", "notValues": ["10.0.0.0/8"]},
                      {"key": "request.headers[x-token]", "values": ["t"]}]}]},
        {"action": "CUSTOM", "provider": {"name": "ext-authz"}, "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
        {"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}, "rules": [{}]},
        {"action": "AUDIT", "rules": [{"from": [{"source": {"serviceAccounts": ["ns/sa", "sa"]}}]}]},
    ]
    for spec in good:
        assert errors_of(ap(spec)) == [], spec


def test_authorization_policy_warnings_and_dry_run():
    w = warnings_of(ap({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}))
    assert has(w, "spec.rules[0]", "will deny all traffic to TCP ports")
    assert warnings_of(ap({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"], "ports": ["80"]}}]}]})) == []
    w = warnings_of(ap({"selector": {"matchLabels": {}}, "rules": [{}]}))
    assert has(w, "spec.selector.matchLabels", "without labels")
    text = ap({"action": "DENY", "rules": [{}]}).replace("namespace: ns", "namespace: ns\n  annotations: {istio.io/dry-run: maybe}")
    assert has(errors_of(text), "metadata.annotations[istio.io/dry-run]", "invalid value")
    text = ap({"action": "DENY", "rules": [{}]}).replace("namespace: ns", "namespace: ns\n  annotations: {istio.io/dry-run: 'true'}")
    assert errors_of(text) == []


def test_dry_run_annotation_only_on_authorization_policy():
    text = pa({"mtls": {"mode": "STRICT"}}).replace("namespace: ns", "namespace: ns\n  annotations: {istio.io/dry-run: 'true'}")
    assert has(errors_of(text), "metadata.annotations[istio.io/dry-run]", "unsupported annotation")


PA_ERRORS = [
    ({"portLevelMtls": {"8080": {"mode": "DISABLE"}}}, "spec.portLevelMtls", "cannot have port level mTLS"),
    ({"selector": SEL, "portLevelMtls": {"0": {"mode": "DISABLE"}}}, "spec.portLevelMtls[0]", "port must be in range 1..65535"),
    ({"selector": SEL, "portLevelMtls": {"http": {"mode": "DISABLE"}}}, "spec.portLevelMtls[http]", "port must be in range"),
    ({"selector": SEL, "portLevelMtls": {}}, "spec.portLevelMtls", "at least 1 entr"),
    ({"mtls": {"mode": "OPTIONAL"}}, "spec.mtls.mode", "unsupported value"),
]


@pytest.mark.parametrize("spec, path, fragment", PA_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(PA_ERRORS)])
def test_peer_authentication_errors(spec, path, fragment):
    found = errors_of(pa(spec))
    assert has(found, path, fragment), found


def test_peer_authentication_valid():
    assert errors_of(pa({"mtls": {"mode": "STRICT"}})) == []
    assert errors_of(pa({"selector": SEL, "mtls": {"mode": "PERMISSIVE"}, "portLevelMtls": {8080: {"mode": "DISABLE"}}})) == []


RA_ERRORS = [
    ({"jwtRules": [{"jwksUri": "https://a/jwks"}]}, "spec.jwtRules[0].issuer", "issuer must be set"),
    ({"jwtRules": [{"issuer": ""}]}, "spec.jwtRules[0].issuer", "must not be empty"),
    ({"jwtRules": [{"issuer": "i", "jwksUri": "ftp://a/jwks"}]}, "spec.jwtRules[0].jwksUri", "not supported"),
    ({"jwtRules": [{"issuer": "i", "jwks": "{not json"}]}, "spec.jwtRules[0].jwks", "jwks parse error"),
    ({"jwtRules": [{"issuer": "i", "jwks": '{"keys": [{"n": "x"}]}'}]}, "spec.jwtRules[0].jwks", "kty"),
    ({"jwtRules": [{"issuer": "i", "jwks": "{}", "jwksUri": "https://a"}]}, "spec.jwtRules[0]", "only one of jwksUri, jwks_uri, jwks"),
    ({"jwtRules": [{"issuer": "i", "outputClaimToHeaders": [{"header": "x y", "claim": "c"}]}]}, "spec.jwtRules[0].outputClaimToHeaders[0].header", "does not match"),
    ({"jwtRules": [{"issuer": "i", "fromHeaders": [{"name": ""}]}]}, "spec.jwtRules[0].fromHeaders[0].name", "must not be empty"),
    ({"jwtRules": [{"issuer": "i", "timeout": "0.1ms"}]}, "spec.jwtRules[0].timeout", "greater than 1ms"),
    ({"jwtRules": [{"issuer": "i", "audiences": [""]}]}, "spec.jwtRules[0].audiences[0]", "must not be empty"),
]


@pytest.mark.parametrize("spec, path, fragment", RA_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(RA_ERRORS)])
def test_request_authentication_errors(spec, path, fragment):
    found = errors_of(ra(spec))
    assert has(found, path, fragment), found


def test_request_authentication_valid_with_istio_jwks():
    from .conftest import SAMPLES

    path = SAMPLES / "jwt" / "jwks.json"
    if not path.is_file():
        pytest.skip("Istio samples not available")
    spec = {"selector": SEL, "jwtRules": [
        {"issuer": "testing@secure.istio.io", "jwks": path.read_text(), "forwardOriginalToken": True,
         "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}], "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}]},
        {"issuer": "https://accounts.example.com", "jwksUri": "https://example.com/.well-known/jwks.json", "timeout": "5s"},
    ]}
    assert errors_of(ra(spec)) == []


TEL_ERRORS = [
    ({"tracing": [{"randomSamplingPercentage": 101}]}, "spec.tracing[0].randomSamplingPercentage", "out of range"),
    ({"tracing": [{"providers": [{"name": ""}]}]}, "spec.tracing[0].providers[0].name", "must not be empty"),
    ({"tracing": [{"customTags": {"t": {"literal": {"value": "a"}, "header": {"name": "h"}}}}]}, "spec.tracing[0].customTags[t]", "only one of literal"),
    ({"metrics": [{"overrides": [{"tagOverrides": {"t": {"operation": "UPSERT"}}}]}]}, "spec.metrics[0].overrides[0].tagOverrides[t].value", "must be set when operation is UPSERT"),
    ({"metrics": [{"overrides": [{"tagOverrides": {"t": {"operation": "REMOVE", "value": "x"}}}]}]}, "spec.metrics[0].overrides[0].tagOverrides[t].value", "only be set when operation is UPSERT"),
    ({"metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT", "customMetric": "x"}}]}]}, "spec.metrics[0].overrides[0].match", "only one of metric, customMetric"),
    ({"metrics": [{"overrides": [{"match": {"metric": "LATENCY"}}]}]}, "spec.metrics[0].overrides[0].match.metric", "unsupported value"),
    ({"metrics": [{"reportingInterval": "0s"}]}, "spec.metrics[0].reportingInterval", "greater than 1ms"),
    ({"accessLogging": [{"match": {"mode": "BOTH"}}]}, "spec.accessLogging[0].match.mode", "unsupported value"),
]


@pytest.mark.parametrize("spec, path, fragment", TEL_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(TEL_ERRORS)])
def test_telemetry_errors(spec, path, fragment):
    found = errors_of(tel(spec))
    assert has(found, path, fragment), found


def test_telemetry_valid_and_warnings():
    spec = {"selector": SEL,
            "tracing": [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": 10.5,
                         "customTags": {"env": {"environment": {"name": "POD_NAME"}}}}],
            "metrics": [{"providers": [{"name": "prometheus"}], "overrides": [{"match": {"metric": "REQUEST_COUNT", "mode": "SERVER"}, "disabled": True}]}],
            "accessLogging": [{"providers": [{"name": "envoy"}], "filter": {"expression": "response.code >= 400"}}]}
    assert errors_of(tel(spec)) == []
    w = warnings_of(tel({"tracing": [{"providers": [{"name": "a"}, {"name": "b"}]}, {}]}))
    assert has(w, "spec.tracing", "multiple tracing") and has(w, "spec.tracing[0].providers", "multiple providers")
