"""Value checks shared by the validation rules: names, labels, hosts, addresses, ports,
protocols, headers and regular expressions.

Each ``validate_*`` function returns ``None`` when the value is fine, or the error message.
The grammars are Kubernetes' (for object metadata) and Istio's (for hosts and labels inside
Istio specs, where Istio accepts upper-case DNS labels).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re

try:
    import re2 as _re2
except ImportError:  # pragma: no cover - google-re2 is a dependency
    _re2 = None

# --- Kubernetes names and labels -------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_C_IDENTIFIER_ENV = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def is_dns1123_label(v: str) -> bool:
    return len(v) <= 63 and bool(_DNS1123_LABEL.match(v))


def is_dns1123_subdomain(v: str) -> bool:
    return len(v) <= 253 and bool(_DNS1123_SUBDOMAIN.match(v))


def validate_dns1123_label(v: str) -> str | None:
    if is_dns1123_label(v):
        return None
    if len(v) > 63:
        return f"{v!r} must be no more than 63 characters"
    return (
        f"{v!r} is not a valid DNS-1123 label: it must consist of lower case alphanumeric "
        "characters or '-', and must start and end with an alphanumeric character"
    )


def validate_dns1123_subdomain(v: str) -> str | None:
    if is_dns1123_subdomain(v):
        return None
    if len(v) > 253:
        return f"{v!r} must be no more than 253 characters"
    return (
        f"{v!r} is not a valid DNS-1123 subdomain: it must consist of lower case alphanumeric "
        "characters, '-' or '.', and must start and end with an alphanumeric character"
    )


def validate_dns1035_label(v: str) -> str | None:
    if len(v) <= 63 and _DNS1035_LABEL.match(v):
        return None
    return (
        f"{v!r} is not a valid DNS-1035 label: it must consist of lower case alphanumeric "
        "characters or '-', start with a letter, and end with an alphanumeric character"
    )


def validate_qualified_name(v: str) -> str | None:
    """A label or annotation key: ``[prefix/]name``."""
    prefix, sep, name = v.rpartition("/")
    if sep:
        if not prefix:
            return f"{v!r}: prefix part must be non-empty"
        err = validate_dns1123_subdomain(prefix)
        if err:
            return f"{v!r}: prefix part {err}"
    if not name:
        return f"{v!r}: name part must be non-empty"
    if len(name) > 63:
        return f"{v!r}: name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return (
            f"{v!r}: name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return None


def validate_label_value(v: str) -> str | None:
    if len(v) > 63:
        return f"{v!r} must be no more than 63 characters"
    if not _LABEL_VALUE.match(v):
        return (
            f"{v!r}: a valid label value must be an empty string or consist of alphanumeric "
            "characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return None


def validate_iana_svc_name(v: str) -> str | None:
    """A named port (``targetPort: http``): at most 15 characters, with a letter."""
    if len(v) > 15:
        return f"{v!r} must be no more than 15 characters"
    if not _IANA_SVC_NAME.match(v):
        return f"{v!r} must contain only lower case alphanumeric characters or '-'"
    if "--" in v:
        return f"{v!r} must not contain consecutive hyphens"
    if not any(c.isalpha() for c in v):
        return f"{v!r} must contain at least one letter (a-z)"
    return None


def validate_env_var_name(v: str) -> str | None:
    if _C_IDENTIFIER_ENV.match(v):
        return None
    return (
        f"{v!r}: a valid environment variable name must consist of alphabetic characters, "
        "digits, '_', '-', or '.', and must not start with a digit"
    )


# --- Istio labels and hosts ------------------------------------------------------------------

_ISTIO_LABEL = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_ISTIO_DNS_LABEL = re.compile(rf"^{_ISTIO_LABEL}$")
_ISTIO_WILDCARD_LABEL = re.compile(rf"^(\*|(\*|\*-)?{_ISTIO_LABEL})$")
_ISTIO_TAG_KEY = re.compile(
    rf"^({_ISTIO_LABEL}(?:\.{_ISTIO_LABEL})*/)?((?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


def is_istio_dns_label(v: str) -> bool:
    """Istio's DNS label check (it accepts upper case, unlike Kubernetes')."""
    return len(v) <= 63 and bool(_ISTIO_DNS_LABEL.match(v))


def is_istio_wildcard_label(v: str) -> bool:
    return len(v) <= 63 and bool(_ISTIO_WILDCARD_LABEL.match(v))


def validate_istio_labels(labels: dict[str, str]) -> list[str]:
    """Istio's check of label maps in specs (subset labels, sourceLabels, endpoint labels)."""
    errs = []
    for k, v in labels.items():
        m = _ISTIO_TAG_KEY.match(k)
        if not m:
            errs.append(f"invalid tag key: {k!r}")
        else:
            if m.group(1) and len(m.group(1)) - 1 > 253:
                errs.append(f"invalid tag key: {k!r} (DNS prefix is too long)")
            if len(m.group(2)) > 63:
                errs.append(f"invalid tag key: {k!r} (name is too long)")
        if not _LABEL_VALUE.match(v):
            errs.append(f"invalid tag value: {v!r}")
    return errs


def _check_dns_preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {name!r} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _validate_dns_labels(domain: str) -> str | None:
    parts = domain.split(".")
    tld = parts[-1]
    if tld.isdigit() or (tld[:1] in "+-" and tld[1:].isdigit()):
        return f"domain name {domain!r} invalid (top level domain {tld!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None  # a trailing dot: "istio.io."
        if not is_istio_dns_label(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


def validate_fqdn(fqdn: str) -> str | None:
    return _check_dns_preconditions(fqdn) or _validate_dns_labels(fqdn)


def validate_wildcard_domain(domain: str) -> str | None:
    """A host that may start with a wildcard label: ``*``, ``*.example.com``, ``reviews``."""
    err = _check_dns_preconditions(domain)
    if err:
        return err
    first, dot, rest = domain.partition(".")
    if not is_istio_wildcard_label(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    if dot:
        return _validate_dns_labels(rest)
    return None


_OUTBOUND_SNI = re.compile(r"outbound_.([0-8].*).*")


def validate_wildcard_domain_for_gateway_vs(sni: bool, domain: str) -> str | None:
    """Hosts of a VirtualService bound to gateways (also allows Istio's ``outbound_`` SNI names)."""
    err = _check_dns_preconditions(domain)
    if err:
        return err
    first, dot, rest = domain.partition(".")
    if sni and first == "outbound_":
        if not _OUTBOUND_SNI.match(domain):
            return f"domain name {domain!r} invalid (label {first!r} invalid)"
        return None
    if not is_istio_wildcard_label(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    if dot:
        return _validate_dns_labels(rest)
    return None


def validate_partial_wildcard(host: str) -> str | None:
    if "*" in host and len(host) != 1 and not host.startswith("*."):
        return f"partial wildcard {host!r} not allowed"
    return None


def _validate_sidecar_or_gateway_host_part(hostname: str, is_gateway: bool) -> list[str]:
    errs = []
    if hostname != "*" and "." not in hostname:
        errs.append("short names (non FQDN) are not allowed")
    err = validate_wildcard_domain(hostname)
    if err:
        if not is_gateway or not is_ip(hostname):
            errs.append(err)
    err = validate_partial_wildcard(hostname)
    if err:
        errs.append(err)
    return errs


def validate_namespace_slash_host(hostname: str, is_gateway: bool) -> list[str]:
    """``namespace/dnsName`` hosts of Gateway servers and Sidecar egress listeners.

    The namespace part is ``*``, ``.``, (for sidecars) ``~``, or a DNS label. Gateways also accept
    a bare host (the old form) and IP addresses.
    """
    ns, sep, dns = hostname.partition("/")
    if not sep:
        if is_gateway:
            return _validate_sidecar_or_gateway_host_part(hostname, True)
        return ["host must be of form namespace/dnsName"]
    errs = []
    if not ns or not dns:
        errs.append("config namespace and dnsName in host entry cannot be empty")
    allowed = ("*", ".") if is_gateway else ("*", ".", "~")
    if ns not in allowed and not is_istio_dns_label(ns):
        errs.append(f"invalid namespace value {ns!r} in {'gateway' if is_gateway else 'sidecar'}")
    errs.extend(_validate_sidecar_or_gateway_host_part(dns, is_gateway))
    return errs


def host_matches(a: str, b: str) -> bool:
    """True when two hosts, possibly wildcards, can name the same host (Istio's ``Matches``)."""
    if a == b:
        return True
    aw, bw = a.startswith("*"), b.startswith("*")
    if aw and bw:
        # both wildcards: the longer suffix must end with the shorter one
        sa, sb = a[1:], b[1:]
        return sa.endswith(sb) if len(sa) >= len(sb) else sb.endswith(sa)
    if aw:
        return b.endswith(a[1:])
    if bw:
        return a.endswith(b[1:])
    return False


def host_subset_of(a: str, b: str) -> bool:
    """True when every host ``a`` names is also named by ``b`` (Istio's ``SubsetOf``)."""
    if b == "*":
        return True
    if b.startswith("*"):
        if a.startswith("*"):
            return a[1:].endswith(b[1:])
        return a.endswith(b[1:])
    if a.startswith("*"):
        return False
    return a == b


# --- addresses and ports ---------------------------------------------------------------------


def is_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return "%" in addr and _is_scoped_ipv6(addr)
    return True


def _is_scoped_ipv6(addr: str) -> bool:
    base, _, zone = addr.partition("%")
    try:
        return isinstance(ipaddress.ip_address(base), ipaddress.IPv6Address) and bool(zone)
    except ValueError:
        return False


def validate_ip(addr: str) -> str | None:
    return None if is_ip(addr) else f"{addr} is not a valid IP"


def validate_ip_subnet(subnet: str) -> str | None:
    """An address (``10.0.0.1``) or a CIDR block (``10.0.0.0/8``)."""
    if subnet.count("/") == 1:
        try:
            ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            return f"{subnet} is not a valid CIDR block"
        return None
    return validate_ip(subnet)


def validate_cidr_or_ip(value: str) -> str | None:
    """Authorization ``ipBlocks`` entries."""
    if "/" in value:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as e:
            return f"bad CIDR range ({value}): {e}"
        return None
    return None if is_ip(value) else f"bad IP address ({value})"


def validate_port(port: int) -> str | None:
    if 1 <= port <= 65535:
        return None
    return f"port number {port} must be in the range 1..65535"


def validate_unix_address(addr: str) -> str | None:
    if not addr:
        return "unix address must not be empty"
    if addr.startswith("@"):
        return None
    if not posixpath.isabs(addr) or addr.endswith("/"):
        return f"{addr} is not an absolute path to a file"
    return None


# --- protocols ---------------------------------------------------------------------------------

_PROTOCOLS = {
    "tcp": "TCP",
    "udp": "UDP",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "http": "HTTP",
    "http_proxy": "HTTP_PROXY",
    "http2": "HTTP2",
    "https": "HTTPS",
    "tls": "TLS",
    "mongo": "Mongo",
    "redis": "Redis",
    "mysql": "MySQL",
}
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})
TCP_PROTOCOLS = frozenset({"TCP", "HTTPS", "TLS", "Mongo", "Redis", "MySQL"})


def parse_protocol(value: str) -> str | None:
    """Istio's canonical protocol name (case-insensitive input), or None if unsupported."""
    return _PROTOCOLS.get(value.lower())


def validate_protocol(value: str) -> str | None:
    """Empty is allowed (the protocol is then detected)."""
    if value and parse_protocol(value) is None:
        return f"unsupported protocol: {value}"
    return None


# --- headers -----------------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_JWT_CLAIM_PREFIX = "@request.auth.claims"


def validate_header_name(name: str) -> str | None:
    if not name:
        return "header name cannot be empty"
    if not _HEADER_NAME.match(name):
        return f"header name {name} is not a valid header name"
    return None


def is_jwt_claim_route(name: str) -> bool:
    """``@request.auth.claims.<claim>`` or ``@request.auth.claims[<claim>]`` header keys."""
    if not name.startswith(_JWT_CLAIM_PREFIX):
        return False
    rest = name[len(_JWT_CLAIM_PREFIX):]
    if rest.startswith("."):
        return all(rest[1:].split(".")) and bool(rest[1:])
    if rest.startswith("["):
        parts = rest.split("]")
        return parts[-1] == "" and all(p.startswith("[") and len(p) > 1 for p in parts[:-1])
    return False


def validate_header_name_or_claim(name: str) -> str | None:
    if not name:
        return "header name cannot be empty"
    if is_jwt_claim_route(name):
        return None
    return validate_header_name(name)


def validate_cors_header_name(name: str) -> str | None:
    if name == "*":
        return None
    return validate_header_name(name)


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def validate_header_set_name(name: str) -> str | None:
    """A request header to add or set (``:authority``/``host`` allowed: rewrites authority)."""
    if not name:
        return "header name cannot be empty"
    if _is_internal_header(name) and not is_authority_header(name):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def validate_header_remove_name(name: str) -> str | None:
    """A request header to remove, or a response header to add/set/remove."""
    if not name:
        return "header name cannot be empty"
    if name.lower() == "host":
        return f'invalid header "{name}": cannot set Host header'
    if _is_internal_header(name):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def validate_header_value(value: str) -> str | None:
    """Header values: no control characters, and ``%`` only as ``%%`` or ``%VARIABLE%``."""
    if _HEADER_VALUE_BAD.search(value):
        return f"header value configuration {value} is invalid"
    i, n = 0, len(value)
    while i < n:
        if value[i] == "%":
            if i + 1 < n and value[i + 1] == "%":
                i += 2
                continue
            end = value.find("%", i + 1)
            if end < 0 or end == i + 1:
                return f"header value configuration: invalid header configuration: {value!r} (a '%' must start '%VARIABLE%' or be doubled)"
            i = end + 1
            continue
        i += 1
    return None


# --- regular expressions -------------------------------------------------------------------------


def validate_regex(pattern: str) -> str | None:
    """RE2 syntax (what Envoy uses), at most 1024 characters."""
    if len(pattern) > 1024:
        return "regex is too large, max length allowed is 1024"
    try:
        if _re2 is not None:
            opts = _re2.Options()
            opts.log_errors = False
            _re2.compile(pattern, options=opts)
        else:  # pragma: no cover
            re.compile(pattern)
    except Exception as e:  # re2.error and friends
        arg = e.args[0] if e.args else ""
        msg = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg or e) or type(e).__name__
        return f"{msg}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
    return None


# --- misc ----------------------------------------------------------------------------------------

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"})

RETRY_ON_POLICIES = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

GRPC_STATUSES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)

# Go's net/http status texts: codes Envoy accepts in retryOn.
HTTP_STATUS_CODES = frozenset(
    [100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
     305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
     416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505,
     506, 507, 508, 510, 511]
)

VALID_CIPHER_SUITES = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "AES256-SHA",
        "DES-CBC3-SHA",
    }
)


def is_valid_cipher_suite(cs: str) -> bool:
    if cs in ("", "ALL"):
        return True
    if not cs[0].isalnum():
        return True  # "-X" / "+X" / "!X" expressions are passed through
    return cs in VALID_CIPHER_SUITES


def validate_export_to(namespace: str, export_to: list[str], is_service_entry: bool, dr_with_selector: bool) -> list[str]:
    """Istio's rules for ``exportTo``: ``.``, ``*``, ``~`` (service entries only) or namespaces."""
    errs: list[str] = []
    if not export_to:
        return errs
    seen: set[str] = set()
    for e in export_to:
        key = namespace if e == "." else e
        if key in seen:
            if key != e:
                errs.append(f"duplicate entries in exportTo: . and current namespace {namespace}")
            else:
                errs.append(f"duplicate entries in exportTo for entry {e}")
            continue
        if is_service_entry and e == "~":
            seen.add(key)
            continue
        if key in (".", "*"):
            seen.add(key)
        elif key == "~":
            errs.append("exportTo ~ (none) is not allowed for Istio configuration objects")
        elif not is_istio_dns_label(key):
            errs.append(f"only .,*, or a valid DNS 1123 label is allowed as exportTo entry, found {e!r}")
        else:
            seen.add(key)
    if dr_with_selector and seen:
        if namespace in seen:
            if len(seen) > 1:
                errs.append("destination rule with workload selector cannot have multiple entries in exportTo")
        else:
            errs.append("destination rule with workload selector cannot have exportTo beyond current namespace")
    if "*" in seen and len(export_to) > 1:
        errs.append("cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(export_to) > 1:
        errs.append("cannot export service entry to no one (~) and someone")
    return errs


def is_prime(x: int) -> bool:
    if x != 0 and x < 4:
        return True
    if x & 1 == 0:
        return False
    f = 3
    while f * f <= x:
        if x % f == 0:
            return False
        f += 2
    return True
