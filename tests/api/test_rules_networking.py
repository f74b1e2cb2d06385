"""Semantic rules of networking.istio.io kinds (Istio's admission webhook), table-driven."""

import pytest

from .helpers import dr, errors_of, gw, has, route, se, sidecar, vs, warnings_of

R = [route()]


def http(**kw) -> dict:
    d = {"route": R}
    d.update(kw)
    return d


VS_ERRORS = [
    # hosts
    ({"hosts": ["*"], "http": [http()]}, "spec.hosts[0]", "wildcard host * is not allowed for virtual services bound to the mesh"),
    ({"hosts": ["foo.*.com"], "http": [http()]}, "spec.hosts[0]", "invalid (label '*' invalid)"),
    ({"hosts": ["a_b"], "http": [http()]}, "spec.hosts[0]", "label 'a_b' invalid"),
    ({"hosts": ["foo.123"], "http": [http()]}, "spec.hosts[0]", "cannot be all-numeric"),
    ({"hosts": ["*.foo.com", "bar.foo.com"], "http": [http()]}, "spec.hosts[1]", "duplicate hosts in virtual service"),
    ({"hosts": ["r"]}, "spec", "http, tcp or tls must be provided"),
    # delegate virtual services (no hosts)
    ({"gateways": ["g"], "http": [http()]}, "spec.gateways", "delegate virtual service must have no gateways"),
    ({"tcp": [{"route": R}]}, "spec.tcp", "delegate virtual service must have no tcp route"),
    # gateways
    ({"hosts": ["r"], "gateways": ["ns/Bad_Name"], "http": [http()]}, "spec.gateways[0]", "invalid value for gateway name"),
    ({"hosts": ["r"], "gateways": ["/g"], "http": [http()]}, "spec.gateways[0]", "cannot be empty"),
    # route / redirect / direct response
    ({"hosts": ["r"], "http": [{"match": [{"uri": {"prefix": "/"}}]}]}, "spec.http[0]", "HTTP route, redirect or direct_response is required"),
    ({"hosts": ["r"], "http": [http(redirect={"uri": "/x"})]}, "spec.http[0]", "cannot contain both route and redirect"),
    ({"hosts": ["r"], "http": [{"redirect": {"uri": "/x"}, "directResponse": {"status": 200}}]}, "spec.http[0]", "both direct_response and redirect"),
    ({"hosts": ["r"], "http": [http(directResponse={"status": 200})]}, "spec.http[0]", "both route and direct_response"),
    ({"hosts": ["r"], "http": [{"redirect": {"redirectCode": 301}}]}, "spec.http[0].redirect", "redirect must specify URI, authority, scheme, or port"),
    ({"hosts": ["r"], "http": [{"redirect": {"uri": "/", "redirectCode": 200}}]}, "spec.http[0].redirect.redirectCode", "must be 3xx"),
    ({"hosts": ["r"], "http": [{"redirect": {"uri": "/", "scheme": "ftp"}}]}, "spec.http[0].redirect.scheme", 'must be "http" or "https"'),
    ({"hosts": ["r"], "http": [{"redirect": {"port": 8080, "derivePort": "FROM_REQUEST_PORT"}}]}, "spec.http[0].redirect", "only one of port, derivePort"),
    ({"hosts": ["r"], "http": [{"directResponse": {"status": 700}}]}, "spec.http[0].directResponse.status", "not in range 200-599"),
    ({"hosts": ["r"], "http": [{"directResponse": {"status": 200, "body": {"string": "a", "bytes": "YQ=="}}}]}, "spec.http[0].directResponse.body", "only one of string, bytes"),
    ({"hosts": ["r"], "http": [http(mirror={"host": "m"}, mirrors=[{"destination": {"host": "m"}}])]}, "spec.http[0]", "both mirror and mirrors"),
    # weights
    ({"hosts": ["r"], "http": [{"route": [route(weight=0), route("s", weight=0)]}]}, "spec.http[0].route", "total destination weight = 0"),
    ({"hosts": ["r"], "http": [{"route": [route(weight=-1)]}]}, "spec.http[0].route[0].weight", "weight -1 < 0"),
    # destinations
    ({"hosts": ["r"], "http": [{"route": [route("*")]}]}, "spec.http[0].route[0].destination.host", "invalid destination host *"),
    ({"hosts": ["r"], "http": [{"route": [route(**{"destination": {"host": "r", "subset": "v_1"}})]}]}, "spec.http[0].route[0].destination.subset", "subset name is invalid"),
    ({"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r", "port": {"number": 0}}}]}]}, "spec.http[0].route[0].destination.port.number", "1..65535"),
    # matches
    ({"hosts": ["r"], "http": [http(match=[{"uri": {"regex": "(unclosed"}}])]}, "spec.http[0].match[0].uri.regex", "RE2"),
    ({"hosts": ["r"], "http": [http(match=[{"uri": {"regex": "(?<=x)y"}}])]}, "spec.http[0].match[0].uri.regex", "RE2"),
    ({"hosts": ["r"], "http": [http(match=[{"method": {"prefix": ""}}])]}, "spec.http[0].match[0].method.prefix", "should not be empty"),
    ({"hosts": ["r"], "http": [http(match=[{"headers": {"bad header": {"exact": "x"}}}])]}, "spec.http[0].match[0].headers[bad header]", "not a valid header name"),
    ({"hosts": ["r"], "http": [http(match=[{"headers": {"@request.auth.claims.group": {"exact": "x"}}}])]}, "spec.http[0].match[0].headers[@request.auth.claims.group]", "only supported for gateway"),
    ({"hosts": ["r"], "http": [http(match=[{"sourceNamespace": "Bad_NS"}])]}, "spec.http[0].match[0].sourceNamespace", "is invalid"),
    ({"hosts": ["r"], "http": [http(match=[{"sourceLabels": {"app": "a b"}}])]}, "spec.http[0].match[0].sourceLabels", "invalid tag value"),
    # timeouts, retries
    ({"hosts": ["r"], "http": [http(timeout="1.5ms")]}, "spec.http[0].timeout", "only durations to ms precision"),
    ({"hosts": ["r"], "http": [http(retries={"attempts": -1})]}, "spec.http[0].retries.attempts", "cannot be negative"),
    ({"hosts": ["r"], "http": [http(retries={"retryOn": "5xx"})]}, "spec.http[0].retries", "attempts are set to 0"),
    ({"hosts": ["r"], "http": [http(retries={"attempts": 2, "retryOn": "5xx,bogus"})]}, "spec.http[0].retries.retryOn", "'bogus' is not a valid retryOn policy"),
    ({"hosts": ["r"], "http": [http(retries={"attempts": 2, "perTryTimeout": "0.5ms"})]}, "spec.http[0].retries.perTryTimeout", "greater than 1ms"),
    # fault injection
    ({"hosts": ["r"], "http": [http(fault={})]}, "spec.http[0].fault", "must have an abort and/or a delay"),
    ({"hosts": ["r"], "http": [http(fault={"abort": {"httpStatus": 99, "percentage": {"value": 100}}})]}, "spec.http[0].fault.abort.httpStatus", "not in range 200-599"),
    ({"hosts": ["r"], "http": [http(fault={"abort": {"httpStatus": 500, "percentage": {"value": 101}}})]}, "spec.http[0].fault.abort.percentage.value", "neither 0.0, nor in range"),
    ({"hosts": ["r"], "http": [http(fault={"abort": {"grpcStatus": "NOPE"}})]}, "spec.http[0].fault.abort.grpcStatus", "not supported"),
    ({"hosts": ["r"], "http": [http(fault={"abort": {"http2Error": "x"}})]}, "spec.http[0].fault.abort.http2Error", "not supported yet"),
    ({"hosts": ["r"], "http": [http(fault={"delay": {"fixedDelay": "1s", "percentage": {"value": -5}}})]}, "spec.http[0].fault.delay.percentage.value", "neither 0.0"),
    ({"hosts": ["r"], "http": [http(fault={"delay": {"exponentialDelay": "1s"}})]}, "spec.http[0].fault.delay.exponentialDelay", "not supported yet"),
    # mirror percentages
    ({"hosts": ["r"], "http": [http(mirror={"host": "m"}, mirrorPercentage={"value": 150})]}, "spec.http[0].mirrorPercentage", "max value of 100"),
    ({"hosts": ["r"], "http": [http(mirrors=[{"destination": {"host": "m"}, "percentage": {"value": -1}}])]}, "spec.http[0].mirrors[0].percentage", "min value of 0"),
    # CORS
    ({"hosts": ["r"], "http": [http(corsPolicy={"allowMethods": ["FETCH"]})]}, "spec.http[0].corsPolicy.allowMethods[0]", "not a supported HTTP method"),
    ({"hosts": ["r"], "http": [http(corsPolicy={"allowOrigins": [{"exact": ""}]})]}, "spec.http[0].corsPolicy.allowOrigins[0]", "not a valid match type"),
    ({"hosts": ["r"], "http": [http(corsPolicy={"allowHeaders": ["a b"]})]}, "spec.http[0].corsPolicy.allowHeaders[0]", "not a valid header name"),
    ({"hosts": ["r"], "http": [http(corsPolicy={"maxAge": "1500ms"})]}, "spec.http[0].corsPolicy.maxAge", "seconds precision"),
    # header manipulation and rewrites
    ({"hosts": ["r"], "http": [http(headers={"request": {"set": {":path": "/"}}})]}, "spec.http[0].headers.request.set[:path]", 'cannot have ":" prefix'),
    ({"hosts": ["r"], "http": [http(headers={"response": {"add": {"host": "x"}}})]}, "spec.http[0].headers.response.add[host]", "cannot set Host header"),
    ({"hosts": ["r"], "http": [http(headers={"request": {"set": {"x-a": "50%off"}}})]}, "spec.http[0].headers.request.set[x-a]", "header value configuration"),
    ({"hosts": ["r"], "http": [http(rewrite={})]}, "spec.http[0].rewrite", "must specify at least one of URI"),
    ({"hosts": ["r"], "http": [http(rewrite={"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}})]}, "spec.http[0].rewrite", "only contain one of URI or UriRegexRewrite"),
    ({"hosts": ["r"], "http": [http(rewrite={"authority": "a"}, headers={"request": {"set": {"host": "b"}}})]}, "spec.http[0].headers.request.set[host]", "authority header cannot be set multiple times"),
    # delegation
    ({"hosts": ["r"], "http": [{"delegate": {"name": "d"}, "route": R}]}, "spec.http[0].route", "root HTTP route  must not specify route"),
    ({"http": [{"delegate": {"name": "d"}, "route": R}]}, "spec.http[0].delegate", "delegate HTTP route cannot contain delegate"),
    # TLS and TCP routes
    ({"hosts": ["a.com"], "tls": [{"match": [{"sniHosts": []}], "route": R}]}, "spec.tls[0].match[0].sniHosts", "at least one SNI host"),
    ({"hosts": ["a.com"], "tls": [{"match": [{"sniHosts": ["b.com"]}], "route": R}]}, "spec.tls[0].match[0].sniHosts[0]", "not a compatible subset"),
    ({"hosts": ["a.com"], "tls": [{"match": [{"sniHosts": ["a.com"]}]}]}, "spec.tls[0].route", "TLS route is required"),
    ({"hosts": ["r"], "tcp": [{"match": [{"port": 99999}], "route": R}]}, "spec.tcp[0].match[0].port", "must be in the range 1..65535"),
    ({"hosts": ["r"], "tcp": [{"match": [{"destinationSubnets": ["10.0.0.0/33"]}], "route": R}]}, "spec.tcp[0].match[0].destinationSubnets[0]", "not a valid CIDR block"),
    ({"hosts": ["r"], "tcp": [{"match": [{"port": 80}]}]}, "spec.tcp[0].route", "TCP route is required"),
    # exportTo
    ({"hosts": ["r"], "http": [http()], "exportTo": ["ns", "."]}, "spec.exportTo", "duplicate entries in exportTo: . and current namespace ns"),
    ({"hosts": ["r"], "http": [http()], "exportTo": ["*", "a"]}, "spec.exportTo", "both public (*) and non-public"),
    ({"hosts": ["r"], "http": [http()], "exportTo": ["~"]}, "spec.exportTo", "exportTo ~ (none) is not allowed"),
]


@pytest.mark.parametrize("spec, path, fragment", VS_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(VS_ERRORS)])
def test_virtual_service_errors(spec, path, fragment):
    found = errors_of(vs(spec))
    assert has(found, path, fragment), found


def test_virtual_service_valid_forms():
    good = [
        {"hosts": ["reviews", "reviews.prod.svc.cluster.local", "*.example.com", "10.1.2.3"], "http": [http()]},
        {"hosts": ["*"], "gateways": ["bookinfo-gateway"], "http": [http()]},
        {"hosts": ["r"], "http": [{"route": [route(weight=90), route("s", weight=10)]}]},
        # current Istio does not require weights to sum to 100: they are relative
        {"hosts": ["r"], "http": [{"route": [route(weight=30), route("s", weight=30)]}]},
        {"hosts": ["r"], "http": [{"directResponse": {"status": 503, "body": {"string": "down"}}}]},
        {"hosts": ["r"], "http": [{"redirect": {"uri": "/v2", "redirectCode": 302}}]},
        {"hosts": ["r"], "http": [http(match=[{"uri": {"prefix": ""}}])]},
        {"hosts": ["r"], "http": [http(match=[{"withoutHeaders": {"x-a": {"regex": "*"}}}])]},
        {"hosts": ["r"], "http": [http(retries={"attempts": 3, "retryOn": "5xx,503,connect-failure"}, timeout="10s")]},
        {"http": [http(match=[{"uri": {"prefix": "/api"}}])]},  # a delegate
        {"hosts": ["a.com"], "gateways": ["mesh"], "tls": [{"match": [{"sniHosts": ["a.com"], "port": 443}], "route": R}]},
        {"hosts": ["r"], "gateways": ["g"], "http": [http(match=[{"headers": {"@request.auth.claims.group": {"exact": "x"}}}])]},
    ]
    for spec in good:
        assert errors_of(vs(spec)) == [], spec


def test_virtual_service_warnings():
    w = warnings_of(vs({"hosts": ["r"], "http": [http(), http()]}))
    assert ("spec.http[1]", "virtualService rule #1 not used (only the last rule can have no matches)") in w
    m = {"uri": {"exact": "/a"}}
    w = warnings_of(vs({"hosts": ["r"], "http": [http(match=[m], name="one"), http(match=[m])]}))
    assert has(w, "spec.http[1].match[0]", 'virtualService rule #1 match #0 is not used (duplicate/overlapping match in rule "one")')
    assert has(w, "spec.http[1]", "all matches used by prior rules")
    w = warnings_of(vs({"hosts": ["r"], "http": [http(match=[{"uri": {"prefix": "/a"}}]), http(match=[{"uri": {"prefix": "/ab"}}])]}))
    assert has(w, "spec.http[1].match[0]", "#0 of prefix /ab is not used (duplicate/overlapping match in rule #0 of prefix /a on #0)")
    w = warnings_of(vs({"hosts": ["r"], "http": [http(fault={"delay": {"percent": 50, "fixedDelay": "1s"}})]}))
    assert has(w, "spec.http[0].fault.delay.percent", "deprecated")
    w = warnings_of(vs({"hosts": ["r"], "gateways": ["prod.gw"], "http": [http()]}))
    assert has(w, "spec.gateways[0]", "legacy gatewayName format")


def test_unreachable_rules_carry_istio_message_types():
    from pilotfish.api import validate

    from .conftest import one

    m = {"uri": {"exact": "/a"}}
    codes = {i.code for i in validate(one(vs({"hosts": ["r"], "http": [http(match=[m]), http(match=[m])]})))}
    assert codes == {"VirtualServiceUnreachableRule", "VirtualServiceIneffectiveMatch"}


DR_ERRORS = [
    ({"host": "*.foo.*"}, "spec.host", "invalid"),
    ({"host": "r", "subsets": [{"name": "v1"}, {"name": "v1"}]}, "spec.subsets[1].name", "duplicate subset names: v1"),
    ({"host": "r", "subsets": [{"name": "v.1"}]}, "spec.subsets[0].name", "subset name is invalid"),
    ({"host": "r", "subsets": [{"name": "v1", "labels": {"version": "a b"}}]}, "spec.subsets[0].labels", "invalid tag value"),
    ({"host": "r", "trafficPolicy": {}}, "spec.trafficPolicy", "must have at least one field"),
    ({"host": "r", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM", "consistentHash": {"useSourceIp": True}}}}, "spec.trafficPolicy.loadBalancer", "only one of simple, consistentHash"),
    ({"host": "r", "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x", "useSourceIp": True}}}}, "spec.trafficPolicy.loadBalancer.consistentHash", "only one of"),
    ({"host": "r", "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 100}}}}}, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "prime"),
    ({"host": "r", "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": ""}}}}}, "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "name required for HttpCookie"),
    ({"host": "r", "trafficPolicy": {"connectionPool": {}}}, "spec.trafficPolicy.connectionPool", "at least one field"),
    ({"host": "r", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": -1}}}}, "spec.trafficPolicy.connectionPool.tcp.maxConnections", "non-negative"),
    ({"host": "r", "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "useClientProtocol": True}}}}, "spec.trafficPolicy.connectionPool.http.useClientProtocol", "must not be true"),
    ({"host": "r", "trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 150}}}, "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "not in range 0..100"),
    ({"host": "r", "trafficPolicy": {"outlierDetection": {"consecutiveLocalOriginFailures": 3}}}, "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", "split external local origin errors is set to false"),
    ({"host": "r", "trafficPolicy": {"outlierDetection": {"interval": "1.5ms"}}}, "spec.trafficPolicy.outlierDetection.interval", "ms precision"),
    ({"host": "r", "trafficPolicy": {"tls": {"mode": "MUTUAL"}}}, "spec.trafficPolicy.tls.clientCertificate", "client certificate required"),
    ({"host": "r", "trafficPolicy": {"tls": {"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/ca"}}}, "spec.trafficPolicy.tls", "If credentialName is set"),
    ({"host": "r", "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True, "subjectAltNames": ["a"]}}}, "spec.trafficPolicy.tls", "InsecureSkipVerify"),
    ({"host": "r", "trafficPolicy": {"tls": {"mode": "STRICT"}}}, "spec.trafficPolicy.tls.mode", "unsupported value"),
    ({"host": "r", "trafficPolicy": {"portLevelSettings": [{"port": {"number": 80}}]}}, "spec.trafficPolicy.portLevelSettings[0]", "at least one field"),
    ({"host": "r", "trafficPolicy": {"portLevelSettings": [{"tls": {"mode": "SIMPLE"}}]}}, "spec.trafficPolicy.portLevelSettings[0].port", "must have valid port"),
    ({"host": "r", "trafficPolicy": {"tunnel": {"targetHost": "a.com", "targetPort": 80}, "proxyProtocol": {}}}, "spec.trafficPolicy", "tunnel and proxyProtocol"),
    ({"host": "r", "trafficPolicy": {"tunnel": {"targetHost": "a.com", "targetPort": 0, "protocol": "PUT"}}}, "spec.trafficPolicy.tunnel.protocol", "CONNECT"),
    ({"host": "r", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a/*", "to": {"b/*": 60}}]}}}}, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "total locality weight 60 != 100"),
    ({"host": "r", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "a"}]}}, "outlierDetection": {"interval": "1s"}}}, "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "different regions"),
    ({"host": "r", "workloadSelector": {"matchLabels": {"app": "*"}}}, "spec.workloadSelector.matchLabels[app]", "wildcard is not supported"),
    ({"host": "r", "workloadSelector": {"matchLabels": {"app": "a"}}, "exportTo": ["other"]}, "spec.exportTo", "cannot have exportTo beyond current namespace"),
]


@pytest.mark.parametrize("spec, path, fragment", DR_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(DR_ERRORS)])
def test_destination_rule_errors(spec, path, fragment):
    found = errors_of(dr(spec))
    assert has(found, path, fragment), found


def test_destination_rule_warnings():
    w = warnings_of(dr({"host": "r", "trafficPolicy": {"outlierDetection": {"consecutiveErrors": 5}}}))
    assert has(w, "spec.trafficPolicy.outlierDetection.consecutiveErrors", "deprecated")
    w = warnings_of(dr({"host": "r", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "b"}]}}}}))
    assert has(w, "spec.trafficPolicy.loadBalancer.localityLbSetting", "outlier detection policy must be provided")


SERVER = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}


def server(**kw) -> dict:
    s = {"port": dict(SERVER["port"]), "hosts": ["*"]}
    for k, v in kw.items():
        if k in ("number", "name", "protocol"):
            s["port"][k] = v
        else:
            s[k] = v
    return s


GW_ERRORS = [
    ({"servers": []}, "spec.servers", "at least one server"),
    ({"servers": [{"hosts": ["*"]}]}, "spec.servers[0].port", "required field is missing"),
    ({"servers": [server(number=0)]}, "spec.servers[0].port.number", "1..65535"),
    ({"servers": [server(protocol="SMTP")]}, "spec.servers[0].port.protocol", "invalid protocol 'SMTP'"),
    ({"servers": [server(name="")]}, "spec.servers[0].port.name", "port name must be set"),
    ({"servers": [server(), server(number=81)]}, "spec.servers[1].port.name", "port names in servers must be unique"),
    ({"servers": [server(hosts=[])]}, "spec.servers[0].hosts", "at least one host"),
    ({"servers": [server(hosts=["reviews"])]}, "spec.servers[0].hosts[0]", "short names (non FQDN) are not allowed"),
    ({"servers": [server(hosts=["ns/foo*.com"])]}, "spec.servers[0].hosts[0]", "partial wildcard"),
    ({"servers": [server(hosts=["Bad_NS/a.com"])]}, "spec.servers[0].hosts[0]", "invalid namespace value"),
    ({"servers": [server(number=443, name="https", protocol="HTTPS")]}, "spec.servers[0]", "must have TLS settings for HTTPS/TLS"),
    ({"servers": [server(number=443, name="https", protocol="HTTPS", tls={"mode": "SIMPLE"})]}, "spec.servers[0].tls.serverCertificate", "SIMPLE TLS requires a server certificate"),
    ({"servers": [server(number=443, name="https", protocol="HTTPS", tls={"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"})]}, "spec.servers[0].tls.caCertificates", "client CA bundle"),
    ({"servers": [server(number=443, name="https", protocol="HTTPS", tls={"mode": "ISTIO_MUTUAL", "credentialName": "c"})]}, "spec.servers[0].tls.credentialName", "cannot have associated credentialName"),
    ({"servers": [server(tls={"mode": "SIMPLE", "credentialName": "c"})]}, "spec.servers[0].tls", "cannot have TLS settings for plain text HTTP"),
    ({"servers": [server(number=31400, name="tcp", protocol="TCP", tls={"mode": "PASSTHROUGH"})]}, "spec.servers[0].tls", "non HTTPS/TLS ports"),
    ({"servers": [server(bind="not-an-ip")]}, "spec.servers[0].bind", "not a valid IP"),
    ({"servers": [server(number=443, name="https", protocol="HTTPS", tls={"mode": "SIMPLE", "credentialName": "a", "credentialNames": ["b"]})]}, "spec.servers[0].tls", "only one of credentialName, credentialNames"),
]


@pytest.mark.parametrize("spec, path, fragment", GW_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(GW_ERRORS)])
def test_gateway_errors(spec, path, fragment):
    found = errors_of(gw(spec))
    assert has(found, path, fragment), found


def test_gateway_valid_and_name_rule():
    ok = gw({"selector": {"istio": "ingressgateway"}, "servers": [
        server(hosts=["*", "prod/*.example.com", "./bookinfo.com", "10.0.0.1"]),
        server(number=443, name="https", protocol="HTTPS", tls={"mode": "SIMPLE", "credentialName": "bookinfo-cert"}),
        server(number=8443, name="mtls", protocol="HTTPS", tls={"mode": "MUTUAL", "credentialName": "c"}),
        server(number=15443, name="tls", protocol="TLS", tls={"mode": "AUTO_PASSTHROUGH"}, hosts=["*.local"]),
        server(number=8080, name="redirect", tls={"httpsRedirect": True}),
    ]})
    assert errors_of(ok) == []
    found = errors_of(gw({"servers": [server()]}, name="a.b"))
    assert has(found, "metadata.name", "invalid gateway name")
    w = warnings_of(gw({"servers": [server(number=443, name="https", protocol="HTTPS", tls={"mode": "PASSTHROUGH", "credentialName": "c"})]}))
    assert has(w, "spec.servers[0].tls.mode", "does not use certificates")


SE_ERRORS = [
    ({"hosts": []}, "spec.hosts", "at least 1 item"),
    ({"hosts": ["*"]}, "spec.hosts[0]", "invalid host *"),
    ({"hosts": ["a.com"], "addresses": ["10.0.0.0/8"], "resolution": "DNS"}, "spec.resolution", "CIDR addresses are allowed only for NONE/STATIC"),
    ({"hosts": ["a.com"], "addresses": ["300.1.1.1"]}, "spec.addresses[0]", "not a valid IP"),
    ({"hosts": ["a.com"], "ports": [{"number": 80, "name": "http"}, {"number": 80, "name": "h2"}]}, "spec.ports[1].number", "already defined"),
    ({"hosts": ["a.com"], "ports": [{"number": 80, "name": "http"}, {"number": 81, "name": "http"}]}, "spec.ports[1].name", "already defined"),
    ({"hosts": ["a.com"], "ports": [{"number": 80, "name": "http", "protocol": "SMTP"}]}, "spec.ports[0].protocol", "unsupported protocol"),
    ({"hosts": ["a.com"], "ports": [{"number": 80, "name": "h_t"}]}, "spec.ports[0].name", "invalid port name"),
    ({"hosts": ["a.com"], "endpoints": [{"address": "1.1.1.1"}]}, "spec.endpoints", "no endpoints should be provided for resolution type none"),
    ({"hosts": ["a.com"], "resolution": "STATIC", "endpoints": [{"address": "db.example.com"}]}, "spec.endpoints[0].address", "is not a valid IP address"),
    ({"hosts": ["a.com"], "resolution": "STATIC", "endpoints": [{}]}, "spec.endpoints[0].address", "address is required"),
    ({"hosts": ["a.com"], "resolution": "STATIC", "ports": [{"number": 80, "name": "http"}], "endpoints": [{"address": "1.1.1.1", "ports": {"grpc": 8080}}]}, "spec.endpoints[0].ports[grpc]", "not defined by the service entry"),
    ({"hosts": ["*.a.com"], "resolution": "DNS"}, "spec.hosts[0]", "hosts must be FQDN if no endpoints are provided"),
    ({"hosts": ["a.com"], "resolution": "DNS_ROUND_ROBIN", "endpoints": [{"address": "a.com"}, {"address": "b.com"}]}, "spec.endpoints", "only be 0 or 1 endpoint"),
    ({"hosts": ["a.com", "b.com"], "resolution": "DNS", "ports": [{"number": 3306, "name": "tcp", "protocol": "TCP"}]}, "spec.ports", "multiple hosts provided with non-HTTP, non-TLS ports"),
    ({"hosts": ["a.com"], "workloadSelector": {"labels": {"app": "a"}}, "endpoints": [{"address": "1.1.1.1"}], "resolution": "STATIC"}, "spec", "only one of WorkloadSelector or Endpoints"),
    ({"hosts": ["a.com"], "resolution": "MAGIC"}, "spec.resolution", "unsupported value"),
]


@pytest.mark.parametrize("spec, path, fragment", SE_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(SE_ERRORS)])
def test_service_entry_errors(spec, path, fragment):
    found = errors_of(se(spec))
    assert has(found, path, fragment), found


def test_service_entry_warnings():
    w = warnings_of(se({"hosts": ["a.com"], "resolution": "STATIC", "ports": [{"number": 80, "name": "http"}]}))
    assert has(w, "spec.resolution", "neither endpoints nor a workloadSelector")
    w = warnings_of(se({"hosts": ["*.a.com"], "ports": [{"number": 80, "name": "http", "targetPort": 8080}]}))
    assert has(w, "spec.ports[0].targetPort", "no effect when resolution mode is NONE")
    opt_out = se({"hosts": ["a.com"], "ports": [{"number": 22, "name": "ssh", "protocol": "TCP"}]})
    opt_out = opt_out.replace("namespace: ns", "namespace: ns\n  annotations: {networking.istio.io/enable-autoallocate-ip: 'false'}")
    assert has(warnings_of(opt_out), "spec.ports[0]", "addresses are required")


def test_service_entry_valid():
    assert errors_of(se({"hosts": ["www.googleapis.com"], "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}], "resolution": "DNS", "location": "MESH_EXTERNAL"})) == []
    assert errors_of(se({"hosts": ["db.internal"], "addresses": ["10.1.0.0/16"], "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}], "resolution": "STATIC",
                         "endpoints": [{"address": "10.1.2.3", "ports": {"tcp": 15432}, "labels": {"v": "1"}}]})) == []
    assert errors_of(se({"hosts": ["vm.local"], "resolution": "STATIC", "workloadSelector": {"labels": {"app": "vm"}}, "location": "MESH_INTERNAL"})) == []


SIDECAR_ERRORS = [
    ({}, "spec", "empty configuration provided"),
    ({"egress": [{"hosts": ["reviews"]}]}, "spec.egress[0].hosts[0]", "host must be of form namespace/dnsName"),
    ({"egress": [{"hosts": ["ns/reviews"]}]}, "spec.egress[0].hosts[0]", "short names (non FQDN) are not allowed"),
    ({"egress": [{"hosts": ["Bad_NS/*"]}]}, "spec.egress[0].hosts[0]", "invalid namespace value"),
    ({"egress": [{"hosts": []}]}, "spec.egress[0].hosts", "at least one host"),
    ({"egress": [{"hosts": ["./*"]}, {"hosts": ["*/*"], "port": {"number": 80}}]}, "spec.egress[0]", "empty port should be the last"),
    ({"egress": [{"port": {"number": 0}, "hosts": ["./*"]}]}, "spec.egress[0].bind", "unix domain socket bind address"),
    ({"ingress": [{"port": {"number": 80, "protocol": "HTTP"}, "defaultEndpoint": "10.0.0.1:80"}]}, "spec.ingress[0].defaultEndpoint", "must be of form 127.0.0.1"),
    ({"ingress": [{"port": {"number": 80}}, {"port": {"number": 80}}]}, "spec.ingress[1].port.number", "must be unique"),
    ({"ingress": [{"port": {"number": 80}, "tls": {"mode": "ISTIO_MUTUAL"}}]}, "spec.ingress[0].tls.mode", "cannot set mode to ISTIO_MUTUAL"),
    ({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": {"host": "p.com", "port": {"number": 80}}}}, "spec.outboundTrafficPolicy.egressProxy", "only with ALLOW_ANY"),
    ({"workloadSelector": {"labels": {"app": "a*"}}, "egress": [{"hosts": ["./*"]}]}, "spec.workloadSelector.labels[app]", "wildcard is not supported"),
]


@pytest.mark.parametrize("spec, path, fragment", SIDECAR_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(SIDECAR_ERRORS)])
def test_sidecar_errors(spec, path, fragment):
    found = errors_of(sidecar(spec))
    assert has(found, path, fragment), found


def test_sidecar_valid_and_warnings():
    ok = sidecar({"workloadSelector": {"labels": {"app": "ratings"}},
                  "ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "defaultEndpoint": "127.0.0.1:8080"}],
                  "egress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "egress"}, "hosts": ["prod-us1/*"]},
                             {"hosts": ["istio-system/*", "./*", "~/*"]}],
                  "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
    assert errors_of(ok) == []
    w = warnings_of(sidecar({"egress": [{"hosts": ["*/*", "ns/a.com"]}]}))
    assert has(w, "spec.egress[0].hosts", "`*/*` host select all resources")
    w = warnings_of(sidecar({"outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {"host": "p.com", "port": {"number": 80}}}}))
    assert has(w, "spec.outboundTrafficPolicy.egressProxy", "deprecated")


def test_workload_entry_and_group():
    from .helpers import doc

    assert errors_of(doc("networking.istio.io/v1", "WorkloadEntry", {"address": "vm.example.com", "ports": {"http": 8080}})) == []
    found = errors_of(doc("networking.istio.io/v1", "WorkloadEntry", {"address": "unix://rel/path"}))
    assert has(found, "spec.address", "not an absolute path")
    found = errors_of(doc("networking.istio.io/v1", "WorkloadEntry", {"ports": {"http": 8080}}))
    assert has(found, "spec.address", "address is required")
    found = errors_of(doc("networking.istio.io/v1", "WorkloadGroup", {"metadata": {"labels": {"app": "a"}}}))
    assert has(found, "spec.template", "required field is missing")
    found = errors_of(doc("networking.istio.io/v1", "WorkloadGroup", {"template": {}, "probe": {"periodSeconds": 5}}))
    assert has(found, "spec.probe", "must have one of httpGet")
    found = errors_of(doc("networking.istio.io/v1", "WorkloadGroup", {"template": {}, "probe": {"httpGet": {"port": 8080, "scheme": "FTP"}}}))
    assert has(found, "spec.probe.httpGet.scheme", "must be one of")
