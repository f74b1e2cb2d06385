"""Semantic rules of ``security.istio.io`` kinds, after Istio's admission webhook."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from pilotfish.api import checks
from pilotfish.api.issues import FieldPath
from pilotfish.api.kinds import SECURITY
from pilotfish.api.rules import METADATA, SPEC, Ctx, rule
from pilotfish.api.rules.common import check_duration, check_policy_targets, check_workload_selector
from pilotfish.api.types import security as s

DRY_RUN = "istio.io/dry-run"


@rule(SECURITY, "PeerAuthentication")
def validate_peer_authentication(pa: s.PeerAuthentication, ctx: Ctx) -> None:
    spec = pa.spec
    empty_selector = spec.selector is None or not spec.selector.match_labels
    if empty_selector and spec.port_level_mtls:
        ctx.error(SPEC.f("portLevelMtls"), "mesh/namespace peer authentication cannot have port level mTLS (portLevelMtls requires a selector)")
    for key in spec.port_level_mtls or {}:
        if not (key.isascii() and key.isdigit() and 0 < int(key) <= 65535):
            ctx.error(SPEC.f("portLevelMtls").k(key), "port must be in range 1..65535")
    if spec.selector is not None:
        check_workload_selector(ctx, SPEC.f("selector").f("matchLabels"), spec.selector.match_labels, True)


# --- AuthorizationPolicy ---------------------------------------------------------------------

_SOURCE_FIELDS = (
    ("principals", "Principals"),
    ("request_principals", "RequestPrincipals"),
    ("namespaces", "Namespaces"),
    ("ip_blocks", "IpBlocks"),
    ("remote_ip_blocks", "RemoteIpBlocks"),
    ("not_principals", "NotPrincipals"),
    ("not_request_principals", "NotRequestPrincipals"),
    ("not_namespaces", "NotNamespaces"),
    ("not_ip_blocks", "NotIpBlocks"),
    ("not_remote_ip_blocks", "NotRemoteIpBlocks"),
)
_OPERATION_FIELDS = (
    ("ports", "Ports"),
    ("methods", "Methods"),
    ("paths", "Paths"),
    ("hosts", "Hosts"),
    ("not_ports", "NotPorts"),
    ("not_methods", "NotMethods"),
    ("not_paths", "NotPaths"),
    ("not_hosts", "NotHosts"),
)


def _camel(py: str) -> str:
    head, *rest = py.split("_")
    return head + "".join(w.title() for w in rest)


@rule(SECURITY, "AuthorizationPolicy")
def validate_authorization_policy(ap: s.AuthorizationPolicy, ctx: Ctx) -> None:
    spec = ap.spec
    check_policy_targets(ctx, spec, SPEC)
    action = spec.action
    rules = spec.rules
    if action == "CUSTOM":
        if rules is None:
            ctx.error(
                SPEC.f("rules"),
                "CUSTOM action without `rules` is meaningless as it will never be triggered, "
                "add an empty rule `{}` if you want it be triggered for every request",
            )
        elif spec.provider is None or not spec.provider.name:
            ctx.error(SPEC.f("provider").f("name"), "`provider.name` must not be empty")
        for i, r in enumerate(rules or []):
            rp = SPEC.f("rules").i(i)
            for j, f in enumerate(r.from_ or []):
                src = f.source
                if src is None:
                    continue
                for attr, label in (
                    ("namespaces", "From.Namespaces"),
                    ("not_namespaces", "From.NotNamespaces"),
                    ("principals", "From.Principals"),
                    ("not_principals", "From.NotPrincipals"),
                    ("request_principals", "From.RequestPrincipals"),
                    ("not_request_principals", "From.NotRequestPrincipals"),
                ):
                    if getattr(src, attr):
                        ctx.error(rp.f("from").i(j).f("source").f(_camel(attr)), f"{label} is currently not supported with CUSTOM action")
            for j, c in enumerate(r.when or []):
                if c.key in ("source.namespace", "source.principal") or c.key.startswith("request.auth."):
                    ctx.error(rp.f("when").i(j).f("key"), f"{c.key} is currently not supported with CUSTOM action")
    if spec.provider is not None and action != "CUSTOM":
        ctx.error(SPEC.f("provider"), f"`provider` must not be with non CUSTOM action, found {action}")
    if action == "DENY" and rules is None:
        ctx.error(
            SPEC.f("rules"),
            "DENY action without `rules` is meaningless as it will never be triggered, "
            "add an empty rule `{}` if you want it be triggered for every request",
        )
    for i, r in enumerate(rules or []):
        _validate_rule(ctx, SPEC.f("rules").i(i), i, r, action)
    dry_run = ap.metadata.annotations.get(DRY_RUN)
    if dry_run is not None:
        if action in ("ALLOW", "DENY"):
            if dry_run.lower() not in ("1", "t", "true", "0", "f", "false"):
                ctx.error(METADATA.f("annotations").k(DRY_RUN), f"annotation {DRY_RUN} with invalid value ({dry_run}): must be true or false")
        else:
            ctx.error(METADATA.f("annotations").k(DRY_RUN), f"the annotation {DRY_RUN} currently only supports action ALLOW/DENY, found action {action}")


def _validate_rule(ctx: Ctx, path: FieldPath, i: int, r: s.Rule, action: str) -> None:
    if r.from_ is not None and not r.from_:
        ctx.error(path.f("from"), f"`from` must not be empty, found at rule {i}")
    tcp_in_from = tcp_in_to = from_exists = to_exists = False
    for j, f in enumerate(r.from_ or []):
        p = path.f("from").i(j)
        src = f.source
        if src is None:
            ctx.error(p.f("source"), f"`from.source` must not be nil, found at rule {i}")
            continue
        from_exists = True
        sp = p.f("source")
        if not any(getattr(src, attr) for attr, _ in _SOURCE_FIELDS) and not src.service_accounts and not src.not_service_accounts:
            ctx.error(sp, f"`from.source` must not be empty, found at rule {i}")
        for attr in ("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks"):
            for k, v in enumerate(getattr(src, attr) or []):
                ctx.check(sp.f(_camel(attr)).i(k), checks.validate_cidr_or_ip(v))
        for attr, label in _SOURCE_FIELDS:
            if "" in (getattr(src, attr) or []):
                ctx.error(sp.f(_camel(attr)), f"empty value not allowed, found in {label}")
        for attr, label in (("service_accounts", "ServiceAccounts"), ("not_service_accounts", "NotServiceAccounts")):
            values = getattr(src, attr)
            if values:
                ctx.check(sp.f(_camel(attr)), _check_service_accounts(label, values))
        if (src.service_accounts or src.not_service_accounts) and (
            src.principals or src.not_principals or src.namespaces or src.not_namespaces
        ):
            ctx.error(sp, "Cannot set serviceAccounts with namespaces or principals")
        if any(
            getattr(src, a) is not None
            for a in ("not_principals", "principals", "ip_blocks", "not_ip_blocks", "namespaces", "not_namespaces",
                      "remote_ip_blocks", "not_remote_ip_blocks", "service_accounts", "not_service_accounts")
        ):
            tcp_in_from = True
    if r.to is not None and not r.to:
        ctx.error(path.f("to"), f"`to` must not be empty, found at rule {i}")
    for j, t in enumerate(r.to or []):
        p = path.f("to").i(j)
        op = t.operation
        if op is None:
            ctx.error(p.f("operation"), f"`to.operation` must not be nil, found at rule {i}")
            continue
        to_exists = True
        opp = p.f("operation")
        if not any(getattr(op, attr) for attr, _ in _OPERATION_FIELDS):
            ctx.error(opp, f"`to.operation` must not be empty, found at rule {i}")
        for attr in ("ports", "not_ports"):
            for k, v in enumerate(getattr(op, attr) or []):
                if not (v.isascii() and v.isdigit() and int(v) <= 65535):
                    ctx.error(opp.f(_camel(attr)).i(k), f"bad port ({v}): must be a number in 0..65535")
        for attr, label in _OPERATION_FIELDS:
            if "" in (getattr(op, attr) or []):
                ctx.error(opp.f(_camel(attr)), f"empty value not allowed, found in {label}")
        for attr, label in (("paths", "Paths"), ("not_paths", "NotPaths")):
            ctx.check(opp.f(_camel(attr)), _check_path_templates(label, getattr(op, attr) or []))
        if op.ports is not None or op.not_ports is not None:
            tcp_in_to = True
    for j, c in enumerate(r.when or []):
        p = path.f("when").i(j)
        if not c.key:
            ctx.error(p.f("key"), "`key` must not be empty")
            continue
        if not c.values and not c.not_values:
            ctx.error(p, f"at least one of `values` or `notValues` must be set for key {c.key}")
            continue
        err = _validate_attribute(c.key, c.values or [])
        if err:
            ctx.error(p.f("values"), f"invalid `value` for `key` {c.key}: {err}")
        err = _validate_attribute(c.key, c.not_values or [])
        if err:
            ctx.error(p.f("notValues"), f"invalid `notValue` for `key` {c.key}: {err}")
    if action == "DENY" and ((from_exists and not to_exists and not tcp_in_from) or (to_exists and not tcp_in_to)):
        ctx.warn(
            path,
            "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of "
            "only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port",
        )


def _check_service_accounts(label: str, values: list[str]) -> str | None:
    if len(values) > 16:
        return "may not have more than 16 values"
    for v in values:
        if v == "":
            return f"empty value not allowed, found in {label}"
        if "*" in v:
            return f"wildcard not allowed, found in {label}"
        if v.count("/") > 1:
            return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {v!r} in {label}"
        if len(v) > 320:
            return f"value cannot exceed 320 characters, found {v!r} in {label}"
        ns, sep, sa = v.partition("/")
        if sep and not ns:
            return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found empty namespace {v!r} in {label}"
        if sep and not sa:
            return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found empty serviceAccount {v!r} in {label}"
    return None


_VALID_LITERAL = re.compile(r"^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$")


def _check_path_templates(label: str, paths: list[str]) -> str | None:
    for path in paths:
        templated = "{*}" in path or "{**}" in path
        found_any = False
        for glob in path.strip("/").split("/"):
            if glob == "{*}" and not found_any:
                continue
            if glob == "{**}" and not found_any:
                found_any = True
                continue
            if glob in ("{*}", "{**}") and found_any:
                return f"invalid or unsupported path {path}, found in {label}. {{**}} is not the last operator"
            if "{" in glob or "}" in glob:
                return f"invalid or unsupported path {path}, found in {label}. Contains '{{' or '}}' beyond a supported path template"
            if templated and not _VALID_LITERAL.match(glob):
                return f"invalid or unsupported path {path}, found in {label}. Contains segment {glob} with invalid string literal"
    return None


def _map_key_ok(key: str) -> bool:
    open_ = key.find("[")
    return key.endswith("]") and open_ > 0 and open_ < len(key) - 2


def _validate_attribute(key: str, values: list[str]) -> str | None:
    """Istio's list of ``when`` condition keys and the values each accepts."""
    if "" in values:
        return f"empty value not allowed, found in {key}"
    if key.startswith("request.headers") or key.startswith("request.experimental.inline.headers"):
        return None if _map_key_ok(key) else f"bad key ({key}): should have format a[b]"
    if key in ("source.ip", "remote.ip", "destination.ip"):
        for v in values:
            err = checks.validate_cidr_or_ip(v)
            if err:
                return err
        return None
    if key == "source.serviceAccount":
        return _check_service_accounts(key, values)
    if key in ("source.namespace", "source.principal", "request.auth.principal", "request.auth.audiences",
               "request.auth.presenter", "connection.sni"):
        return None
    if key.startswith("request.auth.claims") or key.startswith("experimental.envoy.filters."):
        return None if _map_key_ok(key) else f"bad key ({key}): should have format a[b]"
    if key == "destination.port":
        for v in values:
            if not (v.isascii() and v.isdigit() and int(v) <= 65535):
                return f"bad port ({v})"
        return None
    if key == "destination.namespace":
        return f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return f"deprecated attribute {key}: only supported in v1alpha1"
    return f"unknown attribute: {key}"


# --- RequestAuthentication -------------------------------------------------------------------


@rule(SECURITY, "RequestAuthentication")
def validate_request_authentication(ra: s.RequestAuthentication, ctx: Ctx) -> None:
    spec = ra.spec
    check_policy_targets(ctx, spec, SPEC)
    for i, r in enumerate(spec.jwt_rules):
        _validate_jwt_rule(ctx, SPEC.f("jwtRules").i(i), r)


def _validate_jwt_rule(ctx: Ctx, path: FieldPath, r: s.JWTRule) -> None:
    if not r.issuer:
        ctx.error(path.f("issuer"), "issuer must be set")
    for i, a in enumerate(r.audiences):
        if not a:
            ctx.error(path.f("audiences").i(i), "audience must be non-empty string")
    for field, uri in (("jwksUri", r.jwks_uri), ("jwks_uri", r.jwks_uri_legacy)):
        if uri:
            err = _check_jwks_uri(uri)
            if err:
                ctx.error(path.f(field), err)
    if r.jwks:
        err = _check_jwks(r.jwks)
        if err:
            ctx.error(path.f("jwks"), f"jwks parse error: {err}")
    for i, h in enumerate(r.from_headers):
        if not h.name:
            ctx.error(path.f("fromHeaders").i(i).f("name"), "location header name must be non-empty string")
    for i, p in enumerate(r.from_params):
        if not p:
            ctx.error(path.f("fromParams").i(i), "location query must be non-empty string")
    for i, c in enumerate(r.from_cookies):
        if not c:
            ctx.error(path.f("fromCookies").i(i), "cookie name must be non-empty string")
    for i, ch in enumerate(r.output_claim_to_headers):
        p = path.f("outputClaimToHeaders").i(i)
        if not ch.claim or not ch.header:
            ctx.error(p, "outputClaimToHeaders header and claim value must be non-empty string")
            continue
        ctx.check(p.f("header"), checks.validate_header_name(ch.header))
    check_duration(ctx, path.f("timeout"), r.timeout)


def _check_jwks_uri(uri: str) -> str | None:
    try:
        u = urlsplit(uri)
        port = u.port  # raises on a bad port
    except ValueError as e:
        return f"invalid jwksUri {uri!r}: {e}"
    if u.scheme not in ("http", "https"):
        return f"URI scheme {u.scheme!r} is not supported (url must have scheme http:// or https://)"
    del port
    return None


def _check_jwks(text: str) -> str | None:
    """A JSON Web Key Set (``{"keys": [...]}``) or a single JSON Web Key."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        return f"not JSON: {e}"
    if not isinstance(doc, dict):
        return "must be a JSON object"
    keys = doc["keys"] if "keys" in doc else [doc]
    if not isinstance(keys, list):
        return '"keys" must be a list'
    for k in keys:
        if not isinstance(k, dict) or not isinstance(k.get("kty"), str):
            return 'every key needs a "kty" member'
    return None
