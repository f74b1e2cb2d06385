"""Rules of the Kubernetes Gateway API kinds (the checks its CRDs carry)."""

from __future__ import annotations

import re

from pilotfish.api import checks
from pilotfish.api.issues import FieldPath
from pilotfish.api.kinds import GATEWAY_API
from pilotfish.api.rules import SPEC, Ctx, rule
from pilotfish.api.types import gatewayapi as g

_PROTOCOL = re.compile(
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]+$"
)
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}


def _check_hostname(ctx: Ctx, path: FieldPath, host: str) -> None:
    if len(host) > 253 or not _HOSTNAME.match(host):
        ctx.error(path, f"{host!r} is not a valid hostname (a lower-case DNS name, optionally starting with '*.')")
    elif checks.is_ip(host):
        ctx.error(path, f"{host!r}: a hostname may not be an IP address")


@rule(GATEWAY_API, "Gateway")
def validate_gateway(gw: g.Gateway, ctx: Ctx) -> None:
    names: set[str] = set()
    for i, ls in enumerate(gw.spec.listeners):
        p = SPEC.f("listeners").i(i)
        if ls.name in names:
            ctx.error(p.f("name"), f"listener name {ls.name!r} must be unique within the Gateway")
        names.add(ls.name)
        if len(ls.protocol) > 255 or not _PROTOCOL.match(ls.protocol):
            ctx.error(p.f("protocol"), f"invalid protocol {ls.protocol!r}: HTTP, HTTPS, TLS, TCP, UDP, or another protocol name")
        if ls.hostname is not None:
            _check_hostname(ctx, p.f("hostname"), ls.hostname)
        if ls.protocol in ("HTTP", "TCP", "UDP") and ls.tls is not None:
            ctx.error(p.f("tls"), "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")
        if ls.protocol == "HTTPS" and ls.tls is None:
            ctx.error(p.f("tls"), "tls must be specified for protocols ['HTTPS', 'TLS']")
        if ls.tls is not None:
            if ls.tls.mode not in ("Terminate", "Passthrough"):
                ctx.error(p.f("tls").f("mode"), f'unsupported value "{ls.tls.mode}": supported values: "Terminate", "Passthrough"')
            elif ls.tls.mode == "Terminate" and not ls.tls.certificate_refs and not ls.tls.options:
                ctx.error(p.f("tls"), "certificateRefs or options must be specified when mode is Terminate")


@rule(GATEWAY_API, "HTTPRoute")
def validate_http_route(route: g.HTTPRoute, ctx: Ctx) -> None:
    spec = route.spec
    for i, h in enumerate(spec.hostnames):
        _check_hostname(ctx, SPEC.f("hostnames").i(i), h)
    for i, rule_ in enumerate(spec.rules):
        rp = SPEC.f("rules").i(i)
        for j, m in enumerate(rule_.matches):
            mp = rp.f("matches").i(j)
            if m.path is not None:
                pt = m.path
                if pt.type not in ("Exact", "PathPrefix", "RegularExpression"):
                    ctx.error(mp.f("path").f("type"), f'unsupported value "{pt.type}": supported values: "Exact", "PathPrefix", "RegularExpression"')
                elif pt.type in ("Exact", "PathPrefix") and not pt.value.startswith("/"):
                    ctx.error(mp.f("path").f("value"), "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']")
                elif pt.type == "RegularExpression":
                    ctx.check(mp.f("path").f("value"), checks.validate_regex(pt.value))
            for k, h in enumerate(m.headers):
                if h.type not in ("Exact", "RegularExpression"):
                    ctx.error(mp.f("headers").i(k).f("type"), f'unsupported value "{h.type}": supported values: "Exact", "RegularExpression"')
                ctx.check(mp.f("headers").i(k).f("name"), checks.validate_header_name(h.name))
            if m.method is not None and m.method not in _METHODS:
                ctx.error(mp.f("method"), f"unsupported HTTP method {m.method!r}")
        for j, b in enumerate(rule_.backend_refs):
            bp = rp.f("backendRefs").i(j)
            if b.group == "" and b.kind == "Service" and b.port is None:
                ctx.error(bp.f("port"), "Must have port for Service reference")
        if rule_.timeouts is not None and rule_.timeouts.request and rule_.timeouts.backend_request:
            from pilotfish.api.duration import parse_duration_ns

            if parse_duration_ns(rule_.timeouts.backend_request) > parse_duration_ns(rule_.timeouts.request) > 0:
                ctx.error(rp.f("timeouts").f("backendRequest"), "backendRequest timeout cannot be longer than request timeout")
    for i, ref in enumerate(spec.parent_refs):
        if ref.port is not None and ref.kind == "Service" and ref.group == "":
            continue
        if ref.kind not in ("Gateway", "Service"):
            ctx.warn(SPEC.f("parentRefs").i(i).f("kind"), f"parent kind {ref.kind!r} is not one Pilotfish knows (Gateway, Service)")
