"""Semantic rules of ``networking.istio.io`` kinds, after Istio's admission webhook."""

from __future__ import annotations

import base64
import binascii
import json

import msgspec

from pilotfish.api import checks
from pilotfish.api.duration import parse_duration_ns
from pilotfish.api.issues import FieldPath
from pilotfish.api.kinds import NETWORKING
from pilotfish.api.rules import METADATA, SPEC, Ctx, rule
from pilotfish.api.rules.common import (
    check_destination,
    check_duration,
    check_istio_labels,
    check_percent_int,
    check_percentage,
    check_port_name,
    check_string_match,
    check_subset_name,
    check_workload_selector,
)
from pilotfish.api.types import networking as n

_UNIX = "unix://"

# --- Gateway ---------------------------------------------------------------------------------


@rule(NETWORKING, "Gateway")
def validate_gateway(gw: n.Gateway, ctx: Ctx) -> None:
    if gw.metadata.name and not checks.is_istio_dns_label(gw.metadata.name):
        ctx.error(METADATA.f("name"), f"invalid gateway name: {gw.metadata.name!r} (a gateway name must be a DNS label, without dots)")
    spec = gw.spec
    sp = SPEC.f("servers")
    if not spec.servers:
        ctx.error(sp, "gateway must have at least one server")
    port_names: set[str] = set()
    for i, server in enumerate(spec.servers):
        path = sp.i(i)
        validate_server(ctx, path, server)
        if server.port.name in port_names:
            ctx.error(path.f("port").f("name"), f"port names in servers must be unique: duplicate name {server.port.name}")
        port_names.add(server.port.name)
        proto = checks.parse_protocol(server.port.protocol)
        if proto not in checks.HTTP_PROTOCOLS and server.tls is not None and server.tls.https_redirect:
            ctx.warn(path.f("tls").f("httpsRedirect"), "tls.httpsRedirect should only be used with http servers")


def validate_server(ctx: Ctx, path: FieldPath, server: n.Server) -> None:
    if not server.hosts:
        ctx.error(path.f("hosts"), "server config must contain at least one host")
    for j, h in enumerate(server.hosts):
        ctx.check_all(path.f("hosts").i(j), checks.validate_namespace_slash_host(h, is_gateway=True))
    before = len(ctx.issues)
    _validate_server_port(ctx, path.f("port"), server.port, server.bind)
    port_ok = len(ctx.issues) == before
    _validate_bind(ctx, path, server.port, server.bind)
    if server.tls is not None:
        validate_server_tls(ctx, path.f("tls"), server.tls)
    if port_ok:
        proto = checks.parse_protocol(server.port.protocol)
        if proto in checks.TLS_PROTOCOLS and server.tls is None:
            ctx.error(path, "server must have TLS settings for HTTPS/TLS protocols")
        elif proto not in checks.TLS_PROTOCOLS and server.tls is not None:
            t = server.tls
            if proto in checks.HTTP_PROTOCOLS:
                passthrough = t.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
                if not passthrough or t.ca_certificates or t.private_key or t.server_certificate:
                    ctx.error(path.f("tls"), "server cannot have TLS settings for plain text HTTP ports")
            else:
                ctx.error(path.f("tls"), "server cannot have TLS settings for non HTTPS/TLS ports")


def _validate_server_port(ctx: Ctx, path: FieldPath, port: n.Port, bind: str) -> None:
    if checks.parse_protocol(port.protocol) is None:
        ctx.error(
            path.f("protocol"),
            f"invalid protocol {port.protocol!r}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, "
            "MONGO, REDIS, MYSQL, TCP",
        )
    if port.number > 0 or not bind.startswith(_UNIX):
        ctx.check(path.f("number"), checks.validate_port(port.number))
    if port.target_port > 0:
        ctx.error(path.f("targetPort"), "targetPort has no impact on Gateways")
    if not port.name:
        ctx.error(path.f("name"), "port name must be set")


def _validate_bind(ctx: Ctx, path: FieldPath, port, bind: str) -> None:
    if bind.startswith(_UNIX):
        ctx.check(path.f("bind"), checks.validate_unix_address(bind[len(_UNIX):]))
        if port is not None and port.number != 0:
            ctx.error(path.f("port").f("number"), "port number must be 0 for unix domain socket")
    elif bind:
        ctx.check(path.f("bind"), checks.validate_ip(bind))


def validate_server_tls(ctx: Ctx, path: FieldPath, tls: n.ServerTLSSettings) -> None:
    if tls.min_protocol_version in ("TLSV1_0", "TLSV1_1") and not tls.cipher_suites:
        ctx.warn(
            path.f("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        )
    invalid, valid, dup = set(), set(), set()
    for cs in tls.cipher_suites:
        if not checks.is_valid_cipher_suite(cs):
            invalid.add(cs)
        elif cs in valid:
            dup.add(cs)
        else:
            valid.add(cs)
    if invalid:
        ctx.warn(path.f("cipherSuites"), f"ignoring invalid cipher suites: {sorted(invalid)}")
    if dup:
        ctx.warn(path.f("cipherSuites"), f"ignoring duplicate cipher suites: {sorted(dup)}")
    mode = tls.mode
    has_credentials = bool(tls.credential_name or tls.credential_names or tls.tls_certificates)
    if mode == "ISTIO_MUTUAL":
        if tls.server_certificate:
            ctx.error(path.f("serverCertificate"), "ISTIO_MUTUAL TLS cannot have associated server certificate")
        if tls.private_key:
            ctx.error(path.f("privateKey"), "ISTIO_MUTUAL TLS cannot have associated private key")
        if tls.ca_certificates:
            ctx.error(path.f("caCertificates"), "ISTIO_MUTUAL TLS cannot have associated CA bundle")
        if has_credentials:
            ctx.error(path.f("credentialName"), "ISTIO_MUTUAL TLS cannot have associated credentialName")
        return
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        if tls.ca_crl or tls.server_certificate or tls.private_key or tls.ca_certificates or has_credentials:
            ctx.warn(path.f("mode"), f"{mode} mode does not use certificates, they will be ignored")
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and has_credentials:
        return  # certificates come from the named secret(s)
    if mode == "SIMPLE":
        if not tls.server_certificate:
            ctx.error(path.f("serverCertificate"), "SIMPLE TLS requires a server certificate")
        if not tls.private_key:
            ctx.error(path.f("privateKey"), "SIMPLE TLS requires a private key")
    elif mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        if not tls.server_certificate:
            ctx.error(path.f("serverCertificate"), "MUTUAL TLS requires a server certificate")
        if not tls.private_key:
            ctx.error(path.f("privateKey"), "MUTUAL TLS requires a private key")
        if not tls.ca_certificates:
            ctx.error(path.f("caCertificates"), "MUTUAL TLS requires a client CA bundle")
    if tls.ca_crl:
        if has_credentials:
            ctx.error(path.f("caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the credential")
        if mode == "SIMPLE":
            ctx.error(path.f("caCrl"), "CRL is not supported with SIMPLE TLS")


# --- VirtualService --------------------------------------------------------------------------


def _applies_to_gateway_only(vs: n.VirtualServiceSpec) -> bool:
    """Istio's ``isGateway``: true unless the reserved ``mesh`` gateway is listed (an empty
    list counts as true here, a quirk kept for SNI checks)."""
    return "mesh" not in vs.gateways


def validate_gateway_names(ctx: Ctx, path: FieldPath, names: list[str]) -> None:
    for i, name in enumerate(names):
        p = path.i(i)
        ns, sep, gw = name.partition("/")
        if not sep:
            if "." in name:
                parts = name.split(".")
                ctx.warn(p, f"using legacy gatewayName format {name!r}; prefer the <namespace>/<name> format: {parts[1] + '/' + parts[0]!r}")
            ctx.check(p, checks.validate_fqdn(name))
            return  # Istio stops at the first name without a namespace
        if not ns or not gw:
            ctx.error(p, "config namespace and gateway name cannot be empty")
        if not checks.is_istio_dns_label(ns):
            ctx.error(p, f"invalid value for namespace: {ns!r}")
        if not checks.is_istio_dns_label(gw):
            ctx.error(p, f"invalid value for gateway name: {gw!r}")


@rule(NETWORKING, "VirtualService")
def validate_virtual_service(vs: n.VirtualService, ctx: Ctx) -> None:
    spec = vs.spec
    delegate = not spec.hosts
    if delegate:
        if spec.gateways:
            ctx.error(SPEC.f("gateways"), "delegate virtual service must have no gateways specified")
        if spec.tls:
            ctx.error(SPEC.f("tls"), "delegate virtual service must have no tls route specified")
        if spec.tcp:
            ctx.error(SPEC.f("tcp"), "delegate virtual service must have no tcp route specified")
    if not spec.gateways:
        applies_to_mesh, applies_to_gateway = True, False
    else:
        validate_gateway_names(ctx, SPEC.f("gateways"), spec.gateways)
        applies_to_gateway = _applies_to_gateway_only(spec)
        applies_to_mesh = not applies_to_gateway
    if not applies_to_gateway:
        for i, http in enumerate(spec.http):
            for j, m in enumerate(http.match):
                for field, headers in (("headers", m.headers), ("withoutHeaders", m.without_headers)):
                    for key in headers:
                        if checks.is_jwt_claim_route(key):
                            ctx.error(
                                SPEC.f("http").i(i).f("match").i(j).f(field).k(key),
                                f"JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: {spec.gateways}",
                            )
    sni = any(m.sni_hosts for t in spec.tls for m in t.match)
    all_valid = True
    for i, h in enumerate(spec.hosts):
        if applies_to_gateway:
            err = checks.validate_wildcard_domain_for_gateway_vs(sni, h)
        else:
            err = checks.validate_wildcard_domain(h)
        if err:
            if not checks.is_ip(h):
                ctx.error(SPEC.f("hosts").i(i), err)
                all_valid = False
        elif applies_to_mesh and h == "*":
            ctx.error(SPEC.f("hosts").i(i), "wildcard host * is not allowed for virtual services bound to the mesh gateway")
            all_valid = False
    if all_valid:
        hosts = spec.hosts
        for i in range(len(hosts)):
            for j in range(i + 1, len(hosts)):
                if checks.host_matches(hosts[i], hosts[j]):
                    ctx.error(SPEC.f("hosts").i(j), f"duplicate hosts in virtual service: {hosts[i]} & {hosts[j]}")
    if not spec.http and not spec.tcp and not spec.tls:
        ctx.error(SPEC, "http, tcp or tls must be provided in virtual service")
    for i, http in enumerate(spec.http):
        validate_http_route(ctx, SPEC.f("http").i(i), http, delegate)
    for i, tls in enumerate(spec.tls):
        _validate_tls_route(ctx, SPEC.f("tls").i(i), tls, spec)
    for i, tcp in enumerate(spec.tcp):
        _validate_tcp_route(ctx, SPEC.f("tcp").i(i), tcp)
    ctx.check_all(SPEC.f("exportTo"), checks.validate_export_to(ctx.namespace or "", spec.export_to, False, False))
    _unreachable_http(ctx, spec.http)
    _unreachable_l4(ctx, "tcp", spec.tcp)
    _unreachable_l4(ctx, "tls", spec.tls)


def validate_http_route(ctx: Ctx, path: FieldPath, http: n.HTTPRoute, delegate: bool) -> None:
    if delegate:
        route_type = "delegate"
    elif http.delegate is not None:
        route_type = "root"
    else:
        route_type = "independent"
    _validate_route_conflicts(ctx, path, http, route_type)
    _validate_match_requests(ctx, path, http)
    _validate_header_operations(ctx, path.f("headers"), http.headers)
    _validate_cors(ctx, path.f("corsPolicy"), http.cors_policy)
    _validate_fault(ctx, path.f("fault"), http.fault)
    for field, value in (("mirrorPercent", http.mirror_percent), ("mirror_percent", http.mirror_percent_legacy)):
        if value is not None:
            if value > 100:
                ctx.error(path.f(field), f"mirror_percent must have a max value of 100 (it has {value})")
            ctx.warn(path.f(field), 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead')
    if http.mirror_percentage is not None:
        v = http.mirror_percentage.value
        if v > 100:
            ctx.error(path.f("mirrorPercentage"), f"mirror_percentage must have a max value of 100 (it has {v:f})")
        if v < 0:
            ctx.error(path.f("mirrorPercentage"), f"mirror_percentage must have a min value of 0 (it has {v:f})")
    check_destination(ctx, path.f("mirror"), http.mirror)
    for i, m in enumerate(http.mirrors):
        p = path.f("mirrors").i(i)
        check_destination(ctx, p.f("destination"), m.destination)
        if m.percentage is not None:
            v = m.percentage.value
            if v > 100:
                ctx.error(p.f("percentage"), f"mirror percentage must have a max value of 100 (it has {v:f})")
            if v < 0:
                ctx.error(p.f("percentage"), f"mirror percentage must have a min value of 0 (it has {v:f})")
    _validate_redirect(ctx, path.f("redirect"), http.redirect)
    _validate_direct_response(ctx, path.f("directResponse"), http.direct_response)
    _validate_retries(ctx, path.f("retries"), http.retries)
    _validate_rewrite(ctx, path.f("rewrite"), http.rewrite)
    _validate_authority_rewrite(ctx, path, http)
    total = 0
    for i, dest in enumerate(http.route):
        p = path.f("route").i(i)
        _validate_header_operations(ctx, p.f("headers"), dest.headers)
        check_destination(ctx, p.f("destination"), dest.destination)
        if dest.weight < 0:
            ctx.error(p.f("weight"), f"weight {dest.weight} < 0")
        total += dest.weight
    if len(http.route) > 1 and total == 0:
        ctx.error(path.f("route"), "total destination weight = 0")
    check_duration(ctx, path.f("timeout"), http.timeout)


def _validate_route_conflicts(ctx: Ctx, path: FieldPath, http: n.HTTPRoute, route_type: str) -> None:
    if route_type == "root":
        if http.redirect is not None:
            ctx.error(path.f("redirect"), f"root HTTP route {http.name} must not specify redirect")
        if http.route:
            ctx.error(path.f("route"), f"root HTTP route {http.name} must not specify route")
        return
    if route_type == "delegate" and http.delegate is not None:
        ctx.error(path.f("delegate"), "delegate HTTP route cannot contain delegate")
    if http.redirect is not None:
        if http.route:
            ctx.error(path, "HTTP route cannot contain both route and redirect")
        if http.fault is not None:
            ctx.error(path, "HTTP route cannot contain both fault and redirect")
        if http.rewrite is not None:
            ctx.error(path, "HTTP route rule cannot contain both rewrite and redirect")
        if http.direct_response is not None:
            ctx.error(path, "HTTP route rule cannot contain both direct_response and redirect")
    elif http.direct_response is not None:
        if http.route:
            ctx.error(path, "HTTP route cannot contain both route and direct_response")
        if http.fault is not None:
            ctx.error(path, "HTTP route cannot contain both fault and direct_response")
        if http.rewrite is not None:
            ctx.error(path, "HTTP route rule cannot contain both rewrite and direct_response")
    elif not http.route:
        ctx.error(path, "HTTP route, redirect or direct_response is required")
    if http.mirror is not None and http.mirrors:
        ctx.error(path, "HTTP route cannot contain both mirror and mirrors")


def _validate_match_requests(ctx: Ctx, path: FieldPath, http: n.HTTPRoute) -> None:
    for j, m in enumerate(http.match):
        p = path.f("match").i(j)
        for name, sm in m.headers.items():
            hp = p.f("headers").k(name)
            ctx.check(hp, checks.validate_header_name_or_claim(name))
            check_string_match(ctx, hp, sm, "headers")
        for name, sm in m.without_headers.items():
            hp = p.f("withoutHeaders").k(name)
            ctx.check(hp, checks.validate_header_name_or_claim(name))
            if sm.regex != "*":  # "*" means "header present", not a regex
                check_string_match(ctx, hp, sm, "withoutHeaders")
        # an empty uri prefix is allowed (it matches everything); scheme/method/authority not
        check_string_match(ctx, p.f("uri"), m.uri, "uri", allow_empty_prefix=True)
        check_string_match(ctx, p.f("scheme"), m.scheme, "scheme")
        check_string_match(ctx, p.f("method"), m.method, "method")
        check_string_match(ctx, p.f("authority"), m.authority, "authority")
        for name, sm in m.query_params.items():
            check_string_match(ctx, p.f("queryParams").k(name), sm, "queryParams")
        if m.port != 0:
            ctx.check(p.f("port"), checks.validate_port(m.port))
        check_istio_labels(ctx, p.f("sourceLabels"), m.source_labels)
        validate_gateway_names(ctx, p.f("gateways"), m.gateways)
        if m.source_namespace and not checks.is_istio_dns_label(m.source_namespace):
            ctx.error(p.f("sourceNamespace"), f"sourceNamespace match {m.source_namespace} is invalid")


def _validate_header_operations(ctx: Ctx, path: FieldPath, headers: n.Headers | None) -> None:
    if headers is None:
        return
    # request headers that are set or added follow Istio's stricter name rule
    sides = (("request", headers.request, checks.validate_header_set_name),
             ("response", headers.response, checks.validate_header_remove_name))
    for side, ops, set_name_check in sides:
        if ops is None:
            continue
        rp = path.f(side)
        for op in ("add", "set"):
            for name, val in getattr(ops, op).items():
                ctx.check(rp.f(op).k(name), set_name_check(name))
                ctx.check(rp.f(op).k(name), checks.validate_header_value(val))
        for i, name in enumerate(ops.remove):
            ctx.check(rp.f("remove").i(i), checks.validate_header_remove_name(name))


def _validate_cors(ctx: Ctx, path: FieldPath, cors: n.CorsPolicy | None) -> None:
    if cors is None:
        return
    for i, origin in enumerate(cors.allow_origins):
        p = path.f("allowOrigins").i(i)
        value = origin.exact if origin.exact is not None else origin.prefix if origin.prefix is not None else origin.regex
        if not value:
            ctx.error(p, f"'{value or ''}' is not a valid match type for CORS allow origins")
        elif origin.regex is not None:
            err = checks.validate_regex(origin.regex)
            if err:
                ctx.error(p.f("regex"), f'"corsPolicy.allowOrigins": {err}')
    if cors.allow_origin:
        ctx.warn(path.f("allowOrigin"), "allowOrigin is deprecated; use allowOrigins")
    for i, m in enumerate(cors.allow_methods):
        if m not in checks.HTTP_METHODS:
            ctx.error(path.f("allowMethods").i(i), f"{m!r} is not a supported HTTP method")
    for field, names in (("allowHeaders", cors.allow_headers), ("exposeHeaders", cors.expose_headers)):
        for i, name in enumerate(names):
            ctx.check(path.f(field).i(i), checks.validate_cors_header_name(name))
    if cors.max_age is not None:
        check_duration(ctx, path.f("maxAge"), cors.max_age)
        try:
            if parse_duration_ns(cors.max_age) % 1_000_000_000:
                ctx.error(path.f("maxAge"), "max_age duration is accurate only to seconds precision")
        except ValueError:
            pass


def _validate_fault(ctx: Ctx, path: FieldPath, fault: n.HTTPFaultInjection | None) -> None:
    if fault is None:
        return
    if fault.abort is None and fault.delay is None:
        ctx.error(path, "HTTP fault injection must have an abort and/or a delay")
    abort = fault.abort
    if abort is not None:
        p = path.f("abort")
        if abort.percentage is not None:
            check_percentage(ctx, p.f("percentage").f("value"), abort.percentage.value)
        if abort.grpc_status is not None:
            if abort.grpc_status not in checks.GRPC_STATUSES:
                ctx.error(
                    p.f("grpcStatus"),
                    f"gRPC status {abort.grpc_status!r} is not supported. See "
                    "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of "
                    "supported codes, for example 'NOT_FOUND'",
                )
        elif abort.http2_error is not None:
            ctx.error(p.f("http2Error"), "HTTP/2 abort fault injection not supported yet")
        elif abort.http_status is not None:
            _check_http_status(ctx, p.f("httpStatus"), abort.http_status)
        else:
            ctx.warn(p, "abort configured, but error type not set")
    delay = fault.delay
    if delay is not None:
        p = path.f("delay")
        if delay.percentage is not None:
            check_percentage(ctx, p.f("percentage").f("value"), delay.percentage.value)
        if delay.percent:
            ctx.warn(p.f("percent"), "HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage")
        if delay.fixed_delay is not None:
            check_duration(ctx, p.f("fixedDelay"), delay.fixed_delay)
        elif delay.exponential_delay is not None:
            check_duration(ctx, p.f("exponentialDelay"), delay.exponential_delay)
            ctx.error(p.f("exponentialDelay"), "exponentialDelay not supported yet")


def _check_http_status(ctx: Ctx, path: FieldPath, status: int) -> None:
    if status < 200 or status > 600:
        ctx.error(path, f"HTTP status {status} is not in range 200-599")


def _validate_redirect(ctx: Ctx, path: FieldPath, r: n.HTTPRedirect | None) -> None:
    if r is None:
        return
    if not r.uri and not r.authority and r.port is None and r.derive_port is None and not r.scheme:
        ctx.error(path, "redirect must specify URI, authority, scheme, or port")
    if r.redirect_code != 0 and not 300 <= r.redirect_code <= 399:
        ctx.error(path.f("redirectCode"), f"{r.redirect_code} is not a valid redirect code, must be 3xx")
    if r.scheme and r.scheme not in ("http", "https"):
        ctx.error(path.f("scheme"), 'invalid redirect scheme, must be "http" or "https"')
    if r.port:
        ctx.check(path.f("port"), checks.validate_port(r.port))


_KB = 1024
_MB = 1024 * _KB


def _validate_direct_response(ctx: Ctx, path: FieldPath, d: n.HTTPDirectResponse | None) -> None:
    if d is None:
        return
    if d.body is not None:
        size = 0
        if d.body.string is not None:
            size = len(d.body.string.encode())
        elif d.body.bytes is not None:
            try:
                size = len(base64.b64decode(d.body.bytes, validate=True))
            except (binascii.Error, ValueError):
                ctx.error(path.f("body").f("bytes"), "must be base64-encoded data")
        if size > _MB:
            ctx.error(path.f("body"), "large direct_responses may impact control plane performance, must be less than 1MB")
        elif size > 100 * _KB:
            ctx.warn(path.f("body"), "large direct_responses may impact control plane performance")
    _check_http_status(ctx, path.f("status"), d.status)


def _validate_retries(ctx: Ctx, path: FieldPath, r: n.HTTPRetry | None) -> None:
    if r is None:
        return
    if r.attempts < 0:
        ctx.error(path.f("attempts"), "attempts cannot be negative")
    if r.attempts == 0 and (r.per_try_timeout is not None or r.retry_on or r.retry_remote_localities is not None):
        ctx.error(path, "http retry policy configured when attempts are set to 0 (disabled)")
    check_duration(ctx, path.f("perTryTimeout"), r.per_try_timeout)
    if r.retry_on:
        for policy in r.retry_on.split(","):
            if policy.isascii() and policy.isdigit() and int(policy) in checks.HTTP_STATUS_CODES:
                continue
            if policy not in checks.RETRY_ON_POLICIES:
                ctx.error(path.f("retryOn"), f"{policy!r} is not a valid retryOn policy")


def _validate_rewrite(ctx: Ctx, path: FieldPath, rw: n.HTTPRewrite | None) -> None:
    if rw is None:
        return
    if rw.uri and rw.uri_regex_rewrite is not None:
        ctx.error(path, "rewrite may only contain one of URI or UriRegexRewrite")
        return
    if not rw.uri and rw.uri_regex_rewrite is None and not rw.authority:
        ctx.error(
            path,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        )
        return
    rr = rw.uri_regex_rewrite
    if rr is not None:
        if not rr.match or not rr.rewrite:
            ctx.error(path.f("uriRegexRewrite"), "UriRegexRewrite requires both Rewrite and Match fields to be specified")
        else:
            err = checks.validate_regex(rr.match)
            if err:
                ctx.error(path.f("uriRegexRewrite").f("match"), f'"HTTPRewrite.UriRegexRewrite.Match": {err}')


def _validate_authority_rewrite(ctx: Ctx, path: FieldPath, http: n.HTTPRoute) -> None:
    current = http.rewrite.authority if http.rewrite is not None else ""
    req = http.headers.request if http.headers is not None else None
    if req is None:
        return
    for op in ("set", "add"):
        for k, v in getattr(req, op).items():
            if not checks.is_authority_header(k):
                continue
            if current:
                ctx.error(
                    path.f("headers").f("request").f(op).k(k),
                    f"authority header cannot be set multiple times: have {current!r}, attempting to set {v!r}",
                )
                return
            current = v


def _validate_route_destinations(ctx: Ctx, path: FieldPath, routes: list[n.RouteDestination]) -> None:
    total = 0
    for i, r in enumerate(routes):
        p = path.i(i)
        check_destination(ctx, p.f("destination"), r.destination)
        if r.weight < 0:
            ctx.error(p.f("weight"), f"weight {r.weight} < 0")
        total += r.weight
    if len(routes) > 1 and total == 0:
        ctx.error(path, "total destination weight = 0")


def _validate_tls_route(ctx: Ctx, path: FieldPath, tls: n.TLSRoute, vs: n.VirtualServiceSpec) -> None:
    if not tls.match:
        ctx.error(path.f("match"), "TLS route must have at least one match condition")
    for j, m in enumerate(tls.match):
        p = path.f("match").i(j)
        if not m.sni_hosts:
            ctx.error(p.f("sniHosts"), "TLS match must have at least one SNI host")
        for k, sni in enumerate(m.sni_hosts):
            _validate_sni_host(ctx, p.f("sniHosts").i(k), sni, vs)
        for k, subnet in enumerate(m.destination_subnets):
            ctx.check(p.f("destinationSubnets").i(k), checks.validate_ip_subnet(subnet))
        if m.port != 0:
            ctx.check(p.f("port"), checks.validate_port(m.port))
        check_istio_labels(ctx, p.f("sourceLabels"), m.source_labels)
        validate_gateway_names(ctx, p.f("gateways"), m.gateways)
    if not tls.route:
        ctx.error(path.f("route"), "TLS route is required")
    _validate_route_destinations(ctx, path.f("route"), tls.route)


def _validate_sni_host(ctx: Ctx, path: FieldPath, sni: str, vs: n.VirtualServiceSpec) -> None:
    if _applies_to_gateway_only(vs):
        err = checks.validate_wildcard_domain_for_gateway_vs(True, sni)
    else:
        err = checks.validate_wildcard_domain(sni)
    if err:
        if checks.is_ip(sni):
            ctx.warn(path, f"using an IP address ({sni!r}) goes against SNI spec and most clients do not support this")
        else:
            ctx.error(path, err)
        return
    for h in vs.hosts:
        if checks.host_subset_of(sni, h):
            return
    ctx.error(path, f"SNI host {sni!r} is not a compatible subset of any of the virtual service hosts: [{', '.join(vs.hosts)}]")


def _validate_tcp_route(ctx: Ctx, path: FieldPath, tcp: n.TCPRoute) -> None:
    for j, m in enumerate(tcp.match):
        p = path.f("match").i(j)
        for k, subnet in enumerate(m.destination_subnets):
            ctx.check(p.f("destinationSubnets").i(k), checks.validate_ip_subnet(subnet))
        if m.port != 0:
            ctx.check(p.f("port"), checks.validate_port(m.port))
        check_istio_labels(ctx, p.f("sourceLabels"), m.source_labels)
        validate_gateway_names(ctx, p.f("gateways"), m.gateways)
        if m.source_subnet:
            ctx.warn(p.f("sourceSubnet"), "sourceSubnet is deprecated and has no effect")
    if not tcp.route:
        ctx.error(path.f("route"), "TCP route is required")
    _validate_route_destinations(ctx, path.f("route"), tcp.route)


# Unreachable rules and ineffective matches (webhook warnings, analyzer codes IST0130/IST0131).

_ENC = msgspec.json.Encoder(order="sorted")


def _route_name(route, n_: int) -> str:
    name = getattr(route, "name", "")
    return json.dumps(name) if name else f"#{n_}"


def _request_name(match, n_: int) -> str:
    name = getattr(match, "name", "")
    return json.dumps(name) if name else f"#{n_}"


def _unused(ctx: Ctx, path: FieldPath, ruleno: str, reason: str) -> None:
    ctx.warn(path, f"virtualService rule {ruleno} not used ({reason})", code="VirtualServiceUnreachableRule")


def _ineffective(ctx: Ctx, path: FieldPath, ruleno: str, matchno: str, dupno: str) -> None:
    ctx.warn(
        path,
        f"virtualService rule {ruleno} match {matchno} is not used (duplicate/overlapping match in rule {dupno})",
        code="VirtualServiceIneffectiveMatch",
    )


def _exact_or_prefix(sm) -> str:
    if sm is None:
        return ""
    if sm.exact:
        return "exact:" + sm.exact
    if sm.prefix:
        return "prefix:" + sm.prefix
    return ""


def _unreachable_http(ctx: Ctx, routes: list[n.HTTPRoute]) -> None:
    seen: dict[bytes, int] = {}
    empty_seen = -1
    prefixed = []  # (route name, match name, prefix, port, method, authority, headers, params, without)
    for rn, route in enumerate(routes):
        rp = SPEC.f("http").i(rn)
        if not route.match:
            if empty_seen >= 0:
                _unused(ctx, rp, _route_name(route, rn), "only the last rule can have no matches")
            empty_seen = rn
            continue
        dups = 0
        for mn, match in enumerate(route.match):
            key = _ENC.encode(msgspec.structs.replace(match, name=""))
            if key in seen:
                dn = seen[key]
                _ineffective(ctx, rp.f("match").i(mn), _route_name(route, rn), _request_name(match, mn), _route_name(routes[dn], dn))
                dups += 1
                continue
            seen[key] = rn
            if match.uri is not None and match.uri.prefix:
                prefixed.append(
                    (
                        rn,
                        mn,
                        _route_name(route, rn),
                        _request_name(match, mn),
                        match.uri.prefix,
                        match.port,
                        _exact_or_prefix(match.method) or "exact:GET",
                        _exact_or_prefix(match.authority),
                        {k: _exact_or_prefix(v) for k, v in match.headers.items()},
                        {k: _exact_or_prefix(v) for k, v in match.query_params.items()},
                        {k: _exact_or_prefix(v) for k, v in match.without_headers.items()},
                    )
                )
        if dups == len(route.match):
            _unused(ctx, rp, _route_name(route, rn), "all matches used by prior rules")
    for a_i, a in enumerate(prefixed):
        for b in prefixed[a_i + 1:]:
            if b[4] == a[4]:
                continue
            if _covers(a, b):
                _ineffective(
                    ctx,
                    SPEC.f("http").i(b[0]).f("match").i(b[1]),
                    b[2],
                    f"{b[3]} of prefix {b[4]}",
                    f"{a[3]} of prefix {a[4]} on {a[2]}",
                )


def _covers(a, b) -> bool:
    """Whether an earlier prefix match ``a`` catches everything the later ``b`` would."""
    if not b[4].startswith(a[4]):
        return False
    if b[5] != a[5]:
        return False
    for idx in (6, 7):
        if a[idx] != b[idx] and not a[idx].startswith(b[idx]):
            return False
    for idx in (8, 9, 10):
        ma, mb = a[idx], b[idx]
        if len(ma) != len(mb):
            return False
        for k, v in ma.items():
            if k not in mb:
                return False
            if v != mb[k] and not v.startswith(mb[k]):
                return False
    return True


def _unreachable_l4(ctx: Ctx, field: str, routes) -> None:
    seen: dict[bytes, int] = {}
    empty_seen = -1
    for rn, route in enumerate(routes):
        rp = SPEC.f(field).i(rn)
        if not route.match:
            if empty_seen >= 0:
                _unused(ctx, rp, f"#{rn}", "only the last rule can have no matches")
            empty_seen = rn
            continue
        dups = 0
        for mn, match in enumerate(route.match):
            key = _ENC.encode(match)
            if key in seen:
                _ineffective(ctx, rp.f("match").i(mn), f"#{rn}", f"#{mn}", f"#{seen[key]}")
                dups += 1
            else:
                seen[key] = rn
        if dups == len(route.match):
            _unused(ctx, rp, f"#{rn}", "all matches used by prior rules")


# --- DestinationRule -------------------------------------------------------------------------


@rule(NETWORKING, "DestinationRule")
def validate_destination_rule(dr: n.DestinationRule, ctx: Ctx) -> None:
    spec = dr.spec
    ctx.check(SPEC.f("host"), checks.validate_wildcard_domain(spec.host))
    validate_traffic_policy(ctx, SPEC.f("trafficPolicy"), spec.traffic_policy)
    names: set[str] = set()
    for i, subset in enumerate(spec.subsets):
        p = SPEC.f("subsets").i(i)
        if subset.name in names:
            ctx.error(p.f("name"), f"duplicate subset names: {subset.name}")
        names.add(subset.name)
        check_subset_name(ctx, p.f("name"), subset.name)
        check_istio_labels(ctx, p.f("labels"), subset.labels)
        validate_traffic_policy(ctx, p.f("trafficPolicy"), subset.traffic_policy)
    ctx.check_all(
        SPEC.f("exportTo"),
        checks.validate_export_to(ctx.namespace or "", spec.export_to, False, spec.workload_selector is not None),
    )
    if spec.workload_selector is not None:
        check_workload_selector(ctx, SPEC.f("workloadSelector").f("matchLabels"), spec.workload_selector.match_labels, True)


def validate_traffic_policy(ctx: Ctx, path: FieldPath, tp: n.TrafficPolicy | None) -> None:
    if tp is None:
        return
    if (
        tp.outlier_detection is None
        and tp.connection_pool is None
        and tp.load_balancer is None
        and tp.tls is None
        and not tp.port_level_settings
        and tp.tunnel is None
        and tp.proxy_protocol is None
        and tp.retry_budget is None
    ):
        ctx.error(path, "traffic policy must have at least one field")
        return
    if tp.tunnel is not None and tp.proxy_protocol is not None:
        ctx.error(path, "tunnel and proxyProtocol must not be set together")
        return
    _validate_outlier(ctx, path.f("outlierDetection"), tp.outlier_detection)
    validate_connection_pool(ctx, path.f("connectionPool"), tp.connection_pool)
    _validate_load_balancer(ctx, path.f("loadBalancer"), tp.load_balancer, tp.outlier_detection)
    _validate_client_tls(ctx, path.f("tls"), tp.tls)
    for i, pl in enumerate(tp.port_level_settings):
        p = path.f("portLevelSettings").i(i)
        if pl.port is None:
            ctx.error(p.f("port"), "portTrafficPolicy must have valid port")
        if pl.outlier_detection is None and pl.connection_pool is None and pl.load_balancer is None and pl.tls is None:
            ctx.error(p, "port traffic policy must have at least one field")
        else:
            _validate_outlier(ctx, p.f("outlierDetection"), pl.outlier_detection)
            validate_connection_pool(ctx, p.f("connectionPool"), pl.connection_pool)
            _validate_load_balancer(ctx, p.f("loadBalancer"), pl.load_balancer, pl.outlier_detection)
            _validate_client_tls(ctx, p.f("tls"), pl.tls)
    if tp.tunnel is not None:
        t, p = tp.tunnel, path.f("tunnel")
        if t.protocol not in ("", "CONNECT", "POST"):
            ctx.error(p.f("protocol"), 'tunnel protocol must be "CONNECT" or "POST"')
        fqdn_err, ip_err = checks.validate_fqdn(t.target_host), checks.validate_ip(t.target_host)
        if fqdn_err and ip_err:
            ctx.error(p.f("targetHost"), f"tunnel target host must be valid FQDN or IP address: {fqdn_err}; {ip_err}")
        err = checks.validate_port(t.target_port)
        if err:
            ctx.error(p.f("targetPort"), f"tunnel target port is invalid: {err}")
    if tp.retry_budget is not None and tp.retry_budget.percent is not None:
        if not 0 <= tp.retry_budget.percent <= 100:
            ctx.error(path.f("retryBudget").f("percent"), f"{tp.retry_budget.percent:g} is out of range: must be between 0 and 100")


def _validate_outlier(ctx: Ctx, path: FieldPath, od: n.OutlierDetection | None) -> None:
    if od is None:
        return
    check_duration(ctx, path.f("baseEjectionTime"), od.base_ejection_time)
    if od.consecutive_errors != 0:
        ctx.warn(
            path.f("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        )
    if not od.split_external_local_origin_errors and (od.consecutive_local_origin_failures or 0) > 0:
        ctx.error(
            path.f("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        )
    check_duration(ctx, path.f("interval"), od.interval)
    check_percent_int(ctx, path.f("maxEjectionPercent"), od.max_ejection_percent)
    check_percent_int(ctx, path.f("minHealthPercent"), od.min_health_percent)


def validate_connection_pool(ctx: Ctx, path: FieldPath, cp: n.ConnectionPoolSettings | None) -> None:
    if cp is None:
        return
    if cp.http is None and cp.tcp is None:
        ctx.error(path, "connection pool must have at least one field")
        return
    h = cp.http
    if h is not None:
        p = path.f("http")
        for field, value, what in (
            ("http1MaxPendingRequests", h.http1_max_pending_requests, "http1 max pending requests"),
            ("http2MaxRequests", h.http2_max_requests, "http2 max requests"),
            ("maxRequestsPerConnection", h.max_requests_per_connection, "max requests per connection"),
            ("maxRetries", h.max_retries, "max retries"),
            ("maxConcurrentStreams", h.max_concurrent_streams, "max concurrent streams"),
        ):
            if value < 0:
                ctx.error(p.f(field), f"{what} must be non-negative")
        check_duration(ctx, p.f("idleTimeout"), h.idle_timeout)
        if h.h2_upgrade_policy == "UPGRADE" and h.use_client_protocol:
            ctx.error(p.f("useClientProtocol"), "use client protocol must not be true when H2UpgradePolicy is UPGRADE")
    t = cp.tcp
    if t is not None:
        p = path.f("tcp")
        if t.max_connections < 0:
            ctx.error(p.f("maxConnections"), "max connections must be non-negative")
        check_duration(ctx, p.f("connectTimeout"), t.connect_timeout)
        check_duration(ctx, p.f("maxConnectionDuration"), t.max_connection_duration)
        check_duration(ctx, p.f("idleTimeout"), t.idle_timeout)
        if t.tcp_keepalive is not None:
            check_duration(ctx, p.f("tcpKeepalive").f("time"), t.tcp_keepalive.time)
            check_duration(ctx, p.f("tcpKeepalive").f("interval"), t.tcp_keepalive.interval)


def _validate_load_balancer(ctx: Ctx, path: FieldPath, lb: n.LoadBalancerSettings | None, od) -> None:
    if lb is None:
        return
    ch = lb.consistent_hash
    if ch is not None:
        p = path.f("consistentHash")
        if ch.http_cookie is not None and not ch.http_cookie.name:
            ctx.error(p.f("httpCookie").f("name"), "name required for HttpCookie")
        if ch.minimum_ring_size != 0:
            ctx.warn(p.f("minimumRingSize"), "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead")
            if ch.ring_hash is not None or ch.maglev is not None:
                ctx.error(p, "only one of MinimumRingSize or Maglev/Ringhash can be specified")
        if ch.maglev is not None:
            size = ch.maglev.table_size
            mp = p.f("maglev").f("tableSize")
            if size == 0:
                ctx.error(mp, "tableSize must be set for maglev")
            if size >= 5000011:
                ctx.error(mp, "tableSize must be less than 5000011 for maglev")
            if not checks.is_prime(size):
                ctx.error(mp, "tableSize must be a prime number for maglev")
    _validate_locality_lb(ctx, path.f("localityLbSetting"), lb.locality_lb_setting, od)
    if lb.warmup_duration_secs is not None:
        check_duration(ctx, path.f("warmupDurationSecs"), lb.warmup_duration_secs)
        ctx.warn(path.f("warmupDurationSecs"), "warmupDurationSecs is deprecated, use warmup")
    if lb.warmup is not None:
        w, p = lb.warmup, path.f("warmup")
        check_duration(ctx, p.f("duration"), w.duration)
        if w.minimum_percent is not None and not 0 <= w.minimum_percent <= 100:
            ctx.error(p.f("minimumPercent"), f"{w.minimum_percent:g} is out of range: must be between 0 and 100")
        if w.aggression is not None and w.aggression < 1:
            ctx.error(p.f("aggression"), f"{w.aggression:g} is out of range: must be at least 1")


_TOPOLOGY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")


def _validate_locality_lb(ctx: Ctx, path: FieldPath, lb: n.LocalityLoadBalancerSetting | None, od) -> None:
    if lb is None:
        return
    if lb.distribute and lb.failover:
        ctx.error(path, "can not simultaneously specify 'distribute' and 'failover'")
        return
    if lb.failover and lb.failover_priority:
        for label in lb.failover_priority:
            if label in _TOPOLOGY_LABELS:
                ctx.error(path.f("failoverPriority"), f"can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'")
                return
    src = []
    for i, d in enumerate(lb.distribute):
        p = path.f("distribute").i(i)
        src.append(d.from_)
        total = 0
        for loc, weight in d.to.items():
            if weight <= 0 or weight > 100:
                ctx.error(p.f("to").k(loc), "locality weight must be in range [1, 100]")
                return
            total += weight
        if total != 100:
            ctx.error(p.f("to"), f"total locality weight {total} != 100")
            return
        ctx.check(p.f("to"), _validate_localities(list(d.to)))
    ctx.check(path.f("distribute"), _validate_localities(src))
    if (lb.failover or lb.failover_priority) and od is None:
        ctx.warn(path, "outlier detection policy must be provided for failover")
    for i, f in enumerate(lb.failover):
        p = path.f("failover").i(i)
        if f.from_ == f.to:
            ctx.error(p, "locality lb failover settings must specify different regions")
        if "/" in f.from_ or "/" in f.to:
            ctx.error(p, "locality lb failover only specify region")
        if "*" in f.from_ or "*" in f.to:
            ctx.error(p, "locality lb failover region should not contain '*' wildcard")


def _validate_localities(localities: list[str]) -> str | None:
    tree: dict[str, dict[str, set[str]]] = {}
    for loc in localities:
        stars = loc.count("*")
        if stars and (stars > 1 or not loc.endswith("*")):
            return f"locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
        if "*" in tree:
            return f"locality {loc} overlap with previous specified ones"
        items = loc.split("/", 2)
        if any(x == "" for x in items):
            return f"locality {loc} must not contain empty region/zone/subzone info"
        region = items[0]
        if len(items) == 1:
            if region in tree:
                return f"locality {loc} overlap with previous specified ones"
            tree[region] = {"*": {"*"}}
        elif len(items) == 2:
            zone = items[1]
            zones = tree.get(region)
            if zones is not None:
                if "*" in zones or zone in zones:
                    return f"locality {loc} overlap with previous specified ones"
                zones[zone] = {"*"}
            else:
                tree[region] = {zone: {"*"}}
        else:
            zone, sub = items[1], items[2]
            zones = tree.get(region)
            if zones is not None:
                if "*" in zones:
                    return f"locality {loc} overlap with previous specified ones"
                subs = zones.get(zone)
                if subs is not None:
                    if "*" in subs or sub in subs:
                        return f"locality {loc} overlap with previous specified ones"
                    subs.add(sub)
                else:
                    zones[zone] = {sub}
            else:
                tree[region] = {zone: {sub}}
    return None


def _validate_client_tls(ctx: Ctx, path: FieldPath, tls: n.ClientTLSSettings | None) -> None:
    if tls is None:
        return
    if tls.insecure_skip_verify:
        if tls.mode == "SIMPLE" and (tls.ca_certificates or tls.credential_name or tls.subject_alt_names):
            ctx.error(path, "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true")
        if tls.mode == "MUTUAL" and (tls.ca_certificates or tls.subject_alt_names):
            ctx.error(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true")
    if tls.mode in ("SIMPLE", "MUTUAL") and tls.credential_name:
        if tls.client_certificate or tls.ca_certificates or tls.private_key or tls.ca_crl:
            ctx.error(path, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set")
        return
    if tls.mode == "MUTUAL":
        if not tls.client_certificate:
            ctx.error(path.f("clientCertificate"), "client certificate required for mutual tls")
        if not tls.private_key:
            ctx.error(path.f("privateKey"), "private key required for mutual tls")


# --- ServiceEntry / WorkloadEntry / WorkloadGroup --------------------------------------------

_AUTO_ALLOCATE = "networking.istio.io/enable-autoallocate-ip"


@rule(NETWORKING, "ServiceEntry")
def validate_service_entry(se: n.ServiceEntry, ctx: Ctx) -> None:
    spec = se.spec
    if spec.workload_selector is not None:
        check_workload_selector(ctx, SPEC.f("workloadSelector").f("labels"), spec.workload_selector.labels, True,
                                "service entry: workload selector specified without labels, will be applied to all services in namespace", SPEC.f("workloadSelector"))
        if spec.endpoints:
            ctx.error(SPEC, "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    if not spec.hosts:
        ctx.error(SPEC.f("hosts"), "service entry must have at least one host")
    for i, h in enumerate(spec.hosts):
        p = SPEC.f("hosts").i(i)
        if h == "*":
            ctx.error(p, f"invalid host {h}")
        else:
            ctx.check(p, checks.validate_wildcard_domain(h))
            err = checks.validate_partial_wildcard(h)
            if err:
                ctx.warn(p, err)
    cidr = False
    for i, a in enumerate(spec.addresses):
        cidr = cidr or "/" in a
        ctx.check(SPEC.f("addresses").i(i), checks.validate_ip_subnet(a))
    if cidr and spec.resolution not in ("NONE", "STATIC"):
        ctx.error(SPEC.f("resolution"), "CIDR addresses are allowed only for NONE/STATIC resolution types")
    auto_allocate = se.metadata.annotations.get(_AUTO_ALLOCATE, "true").lower() != "false"
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(spec.ports):
        p = SPEC.f("ports").i(i)
        if port.name in names:
            ctx.error(p.f("name"), f"service entry port name {port.name!r} already defined")
        names.add(port.name)
        if port.number in numbers:
            ctx.error(p.f("number"), f"service entry port {port.number} already defined")
        numbers.add(port.number)
        if port.target_port != 0:
            ctx.check(p.f("targetPort"), checks.validate_port(port.target_port))
            if spec.resolution == "NONE":
                ctx.warn(p.f("targetPort"), "targetPort has no effect when resolution mode is NONE")
        if not spec.addresses and not auto_allocate and port.protocol in ("", "TCP"):
            ctx.warn(
                p,
                "addresses are required for ports serving TCP (or unset) protocol when ISTIO_META_DNS_AUTO_ALLOCATE is not set on a proxy",
            )
        check_port_name(ctx, p.f("name"), port.name)
        ctx.check(p.f("protocol"), checks.validate_protocol(port.protocol))
        ctx.check(p.f("number"), checks.validate_port(port.number))
    res = spec.resolution
    if res == "NONE":
        if spec.endpoints:
            ctx.error(SPEC.f("endpoints"), "no endpoints should be provided for resolution type none")
        if spec.workload_selector is not None:
            ctx.warn(SPEC.f("workloadSelector"), "workloadSelector should not be set when resolution mode is NONE")
    elif res == "STATIC":
        if not spec.endpoints and spec.workload_selector is None:
            # Pilotfish's own warning (Istio accepts this silently): nothing can ever be an endpoint
            ctx.warn(SPEC.f("resolution"), "STATIC resolution with neither endpoints nor a workloadSelector: the service has no endpoints")
        for i, ep in enumerate(spec.endpoints):
            validate_workload_entry(ctx, SPEC.f("endpoints").i(i), ep, names, allow_fqdn=False)
    elif res in ("DNS", "DNS_ROUND_ROBIN"):
        if not spec.endpoints:
            for i, h in enumerate(spec.hosts):
                if checks.validate_fqdn(h):
                    ctx.error(SPEC.f("hosts").i(i), f"hosts must be FQDN if no endpoints are provided for resolution mode {res}")
        if res == "DNS_ROUND_ROBIN" and len(spec.endpoints) > 1:
            ctx.error(SPEC.f("endpoints"), f"there must only be 0 or 1 endpoint for resolution mode {res}")
        for i, ep in enumerate(spec.endpoints):
            p = SPEC.f("endpoints").i(i)
            if not checks.is_ip(ep.address) and checks.validate_fqdn(ep.address):
                ctx.error(p.f("address"), f"endpoint address {ep.address!r} is not a valid FQDN or an IP address")
            check_istio_labels(ctx, p.f("labels"), ep.labels)
            for name, number in ep.ports.items():
                pp = p.f("ports").k(name)
                if name not in names:
                    ctx.error(pp, f"endpoint port {number} is not defined by the service entry")
                check_port_name(ctx, pp, name)
                ctx.check(pp, checks.validate_port(number))
        if spec.workload_selector is not None:
            ctx.warn(SPEC.f("workloadSelector"), f"workloadSelector should not be set when resolution mode is {res}")
        if spec.addresses and len(spec.hosts) > 1:
            for port in spec.ports:
                if checks.parse_protocol(port.protocol) in checks.TCP_PROTOCOLS:
                    ctx.warn(SPEC.f("hosts"), "service entry can not have more than one host specified simultaneously with address and tcp port")
                    break
    elif res == "DYNAMIC_DNS":
        if spec.endpoints:
            ctx.error(SPEC.f("endpoints"), "no endpoints should be provided for resolution type DYNAMIC_DNS")
        if spec.workload_selector is not None:
            ctx.warn(SPEC.f("workloadSelector"), f"workloadSelector should not be set when resolution mode is {res}")
    if res not in ("NONE", "DYNAMIC_DNS") and len(spec.hosts) > 1:
        for port in spec.ports:
            proto = checks.parse_protocol(port.protocol)
            if proto not in checks.HTTP_PROTOCOLS and proto not in checks.TLS_PROTOCOLS:
                ctx.error(SPEC.f("ports"), "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    ctx.check_all(SPEC.f("exportTo"), checks.validate_export_to(ctx.namespace or "", spec.export_to, True, False))


def validate_workload_entry(
    ctx: Ctx, path: FieldPath, we: n.WorkloadEntrySpec, service_ports: set[str] | None, allow_fqdn: bool
) -> None:
    addr = we.address
    unix = False
    if not addr:
        if not we.network:
            ctx.error(path.f("address"), "address is required")
            return
        ctx.warn(path.f("address"), f"address is unset with network {we.network!r}")
    if addr.startswith(_UNIX):
        unix = True
        ctx.check(path.f("address"), checks.validate_unix_address(addr[len(_UNIX):]))
        if we.ports:
            ctx.error(path.f("ports"), f"unix endpoint {addr} must not include ports")
    elif addr and not checks.is_ip(addr):
        if not allow_fqdn:
            ctx.error(path.f("address"), f"endpoint address {addr!r} is not a valid IP address")
        elif checks.validate_fqdn(addr):
            ctx.error(path.f("address"), f"endpoint address {addr!r} is not a valid FQDN or an IP address")
    for name, number in we.ports.items():
        p = path.f("ports").k(name)
        if service_ports is not None and name not in service_ports:
            ctx.error(p, f"endpoint port {number} is not defined by the service entry")
        check_port_name(ctx, p, name)
        ctx.check(p, checks.validate_port(number))
    check_istio_labels(ctx, path.f("labels"), we.labels)
    if unix and service_ports is not None and len(service_ports) != 1:
        ctx.error(path, "exactly 1 service port required for unix endpoints")


@rule(NETWORKING, "WorkloadEntry")
def validate_workload_entry_kind(we: n.WorkloadEntry, ctx: Ctx) -> None:
    validate_workload_entry(ctx, SPEC, we.spec, None, allow_fqdn=True)


@rule(NETWORKING, "WorkloadGroup")
def validate_workload_group(wg: n.WorkloadGroup, ctx: Ctx) -> None:
    spec = wg.spec
    if spec.metadata is not None:
        for err in checks.validate_istio_labels(spec.metadata.labels):
            ctx.error(SPEC.f("metadata").f("labels"), f"invalid labels: {err}")
    t = spec.template
    for name, number in t.ports.items():
        p = SPEC.f("template").f("ports").k(name)
        check_port_name(ctx, p, name)
        ctx.check(p, checks.validate_port(number))
    if t.address.startswith(_UNIX) and t.ports:
        ctx.error(SPEC.f("template").f("ports"), "UDS may not include ports")
    probe = spec.probe
    if probe is None:
        return
    p = SPEC.f("probe")
    for field, value in (
        ("periodSeconds", probe.period_seconds),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ):
        if value < 0:
            ctx.error(p.f(field), f"{field} must be non-negative")
    if probe.http_get is not None:
        h = probe.http_get
        ctx.check(p.f("httpGet").f("port"), checks.validate_port(h.port))
        if h.scheme not in ("", "HTTP", "HTTPS"):
            ctx.error(p.f("httpGet").f("scheme"), 'httpGet.scheme must be one of "HTTPS", "HTTP"')
        for i, header in enumerate(h.http_headers):
            ctx.check(p.f("httpGet").f("httpHeaders").i(i).f("name"), checks.validate_header_name(header.name))
    elif probe.tcp_socket is not None:
        ctx.check(p.f("tcpSocket").f("port"), checks.validate_port(probe.tcp_socket.port))
    elif probe.exec is not None:
        if not probe.exec.command:
            ctx.error(p.f("exec").f("command"), "exec.command is required")
    elif probe.grpc is not None:
        ctx.check(p.f("grpc").f("port"), checks.validate_port(probe.grpc.port))
    else:
        ctx.error(p, "probe must have one of httpGet, tcpSocket, exec or grpc")


# --- Sidecar ---------------------------------------------------------------------------------


@rule(NETWORKING, "Sidecar")
def validate_sidecar(sc: n.Sidecar, ctx: Ctx) -> None:
    spec = sc.spec
    if spec.workload_selector is not None:
        check_workload_selector(ctx, SPEC.f("workloadSelector").f("labels"), spec.workload_selector.labels, True,
                                "sidecar: workload selector specified without labels, will be applied to all services in namespace", SPEC.f("workloadSelector"))
    if not spec.egress and not spec.ingress and spec.outbound_traffic_policy is None and spec.inbound_connection_pool is None:
        ctx.error(SPEC, "sidecar: empty configuration provided")
        return
    ports: set[int] = set()
    for i, ing in enumerate(spec.ingress):
        p = SPEC.f("ingress").i(i)
        port = ing.port
        if port.target_port > 0:
            ctx.error(p.f("port").f("targetPort"), "targetPort has no impact on Sidecars")
        if port.name:
            check_port_name(ctx, p.f("port").f("name"), port.name)
        ctx.check(p.f("port").f("protocol"), checks.validate_protocol(port.protocol))
        ctx.check(p.f("port").f("number"), checks.validate_port(port.number))
        if ing.bind:
            ctx.check(p.f("bind"), checks.validate_ip(ing.bind))
        if port.number in ports:
            ctx.error(p.f("port").f("number"), "sidecar: ports on IP bound listeners must be unique")
        ports.add(port.number)
        if ing.default_endpoint:
            _validate_default_endpoint(ctx, p.f("defaultEndpoint"), ing.default_endpoint)
        if ing.tls is not None:
            tp = p.f("tls")
            if ing.tls.subject_alt_names:
                ctx.error(tp.f("subjectAltNames"), "sidecar: subjectAltNames is not supported in ingress tls")
            if ing.tls.https_redirect:
                ctx.error(tp.f("httpsRedirect"), "sidecar: httpsRedirect is not supported")
            if ing.tls.credential_name:
                ctx.error(tp.f("credentialName"), "sidecar: credentialName is not currently supported")
            if ing.tls.mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
                ctx.error(tp.f("mode"), f"configuration is invalid: cannot set mode to {ing.tls.mode} in sidecar ingress tls")
            validate_server_tls(ctx, tp, ing.tls)
        validate_connection_pool(ctx, p.f("connectionPool"), ing.connection_pool)
        if ing.connection_pool is not None and ing.connection_pool.http is not None:
            if checks.parse_protocol(port.protocol) not in checks.HTTP_PROTOCOLS:
                ctx.warn(
                    p.f("connectionPool").f("http"),
                    f"sidecar: HTTP connection pool settings are configured for port {port.number} ({port.name!r}) "
                    f"but its protocol is not HTTP ({port.protocol}); only TCP settings will apply",
                )
    validate_connection_pool(ctx, SPEC.f("inboundConnectionPool"), spec.inbound_connection_pool)
    ports = set()
    uds: set[str] = set()
    catch_all = False
    for i, eg in enumerate(spec.egress):
        p = SPEC.f("egress").i(i)
        if eg.port is None:
            if not catch_all:
                if i == len(spec.egress) - 1:
                    catch_all = True
                else:
                    ctx.error(p, "sidecar: the egress listener with empty port should be the last listener in the list")
            else:
                ctx.error(p, "sidecar: egress can have only one listener with empty port")
                continue
        else:
            port = eg.port
            pp = p.f("port")
            if port.target_port > 0:
                ctx.error(pp.f("targetPort"), "targetPort has no impact on Sidecars")
            if port.name:
                check_port_name(ctx, pp.f("name"), port.name)
            ctx.check(pp.f("protocol"), checks.validate_protocol(port.protocol))
            if port.number == 0:
                if not eg.bind.startswith(_UNIX):
                    ctx.error(p.f("bind"), "sidecar: ports with 0 value must have a unix domain socket bind address")
                else:
                    ctx.check(p.f("bind"), checks.validate_unix_address(eg.bind[len(_UNIX):]))
                if eg.capture_mode not in ("DEFAULT", "NONE"):
                    ctx.error(p.f("captureMode"), "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners")
                if eg.bind in uds:
                    ctx.error(p.f("bind"), "sidecar: unix domain socket values for listeners must be unique")
                uds.add(eg.bind)
            else:
                ctx.check(pp.f("number"), checks.validate_port(port.number))
                if eg.bind:
                    ctx.check(p.f("bind"), checks.validate_ip(eg.bind))
                if port.number in ports:
                    ctx.error(pp.f("number"), "sidecar: ports on IP bound listeners must be unique")
                ports.add(port.number)
        if not eg.hosts:
            ctx.error(p.f("hosts"), "sidecar: egress listener must contain at least one host")
            continue
        by_ns: dict[str, set[str]] = {}
        for j, h in enumerate(eg.hosts):
            hp = p.f("hosts").i(j)
            ns, sep, svc = h.partition("/")
            if sep:
                if ns == ".":
                    ns = ctx.namespace or ""
                seen = by_ns.setdefault(ns, set())
                if svc != "*":
                    if svc in seen or "*" in seen:
                        ctx.warn(hp, f"duplicated egress host: {h}")
                elif seen:
                    ctx.warn(hp, f"duplicated egress host: {h}")
                seen.add(svc)
            ctx.check_all(hp, checks.validate_namespace_slash_host(h, is_gateway=False))
        if "*" in by_ns.get("*", set()) and len(by_ns) != 1:
            ctx.warn(p.f("hosts"), "`*/*` host select all resources, no other hosts can be added")
    otp = spec.outbound_traffic_policy
    if otp is not None and otp.egress_proxy is not None:
        p = SPEC.f("outboundTrafficPolicy")
        ctx.warn(p.f("egressProxy"), "outboundTrafficPolicy.egressProxy is deprecated and ignored")
        if otp.mode != "ALLOW_ANY":
            ctx.error(p.f("egressProxy"), "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode")
            return
        ctx.check(p.f("egressProxy").f("host"), checks.validate_fqdn(otp.egress_proxy.host))
        if otp.egress_proxy.port is None:
            ctx.error(p.f("egressProxy").f("port"), "sidecar: egress_proxy port must be non-nil")
            return
        check_destination(ctx, p.f("egressProxy"), otp.egress_proxy)


def _validate_default_endpoint(ctx: Ctx, path: FieldPath, ep: str) -> None:
    if ep.startswith(_UNIX):
        ctx.check(path, checks.validate_unix_address(ep[len(_UNIX):]))
        return
    host, port, err = _split_host_port(ep)
    if err:
        ctx.error(path, err)
        return
    if host not in ("", "127.0.0.1", "0.0.0.0", "::1", "::"):
        ctx.error(path, "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset")
    if not port.isdigit():
        ctx.error(path, f"sidecar: defaultEndpoint port ({port}) is not a number")
    else:
        ctx.check(path, checks.validate_port(int(port)))


def _split_host_port(addr: str) -> tuple[str, str, str | None]:
    """Go's ``net.SplitHostPort``, enough for endpoint checks."""
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            return "", "", f"address {addr}: missing ']' in address"
        rest = addr[end + 1:]
        if not rest.startswith(":"):
            return "", "", f"address {addr}: missing port in address"
        return addr[1:end], rest[1:], None
    host, sep, port = addr.rpartition(":")
    if not sep:
        return "", "", f"address {addr}: missing port in address"
    if ":" in host:
        return "", "", f"address {addr}: too many colons in address"
    return host, port, None
