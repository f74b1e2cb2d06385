"""The proxy configuration model: the contract between the control plane and every proxy.

One ``ProxyConfig`` is a complete, versioned snapshot: listeners, route tables, clusters,
endpoints and secrets. The concepts and names follow Envoy's as Istio emits them (cluster
``outbound|9080|v1|reviews.default.svc.cluster.local``, route table ``9080``, listener
``virtualOutbound``) so that ``proxy-config`` output looks familiar. Field names are
snake_case as in Envoy's own configuration. Durations are seconds (a number) or a duration
string (``"250ms"``, ``"1.5s"``, ``"1h2m"``).

The proxy never reads Istio YAML: it only knows this model. It is loaded with
:func:`load_config` (YAML or JSON) or :func:`decode_config` (a mapping), and every error names
the field (``$.clusters[3].outlier_detection.interval``).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from typing import Any, Literal

import msgspec
import yaml

try:
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: float | int | str | None) -> float | None:
    """``"1h2m3.5s"``, ``"250ms"`` or a number of seconds -> seconds (float)."""
    if value is None or isinstance(value, (int, float)):
        if value is not None and value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return None if value is None else float(value)
    s = value.strip()
    pos, total = 0, 0.0
    if not s:
        raise ValueError("empty duration")
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"invalid duration {value!r} (expected e.g. '1s', '250ms', '1h2m')")
    return total


class _Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    def _durations(self, *names: str) -> None:
        for n in names:
            v = getattr(self, n)
            if isinstance(v, str):
                try:
                    setattr(self, n, parse_duration(v))
                except ValueError as e:
                    raise ValueError(f"{n}: {e}") from None
            elif v is not None and v < 0:
                raise ValueError(f"{n}: duration must not be negative")


# --------------------------------------------------------------------------- matching


class StringMatch(_Base, kw_only=True):
    """Exactly one of ``exact``, ``prefix``, ``suffix``, ``regex`` (RE2, full match), or
    ``present``. An empty StringMatch matches any present value (Istio's ``{}``)."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None
    present: bool | None = None
    ignore_case: bool = False

    def __post_init__(self) -> None:
        set_ = [k for k in ("exact", "prefix", "suffix", "regex") if getattr(self, k) is not None]
        if len(set_) > 1:
            raise ValueError(f"only one of exact/prefix/suffix/regex may be set, got {set_}")


class RouteMatch(_Base, kw_only=True):
    """One Istio ``HTTPMatchRequest``. All conditions must hold."""

    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = {}
    without_headers: dict[str, StringMatch] = {}
    query_params: dict[str, StringMatch] = {}
    port: int | None = None
    source_labels: dict[str, str] = {}
    source_namespace: str | None = None
    ignore_uri_case: bool = False


# --------------------------------------------------------------------------- actions


class HeaderOps(_Base, kw_only=True):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class WeightedCluster(_Base, kw_only=True):
    cluster: str
    weight: int = 100
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError("weight must not be negative")


class RetryPolicy(_Base, kw_only=True):
    """Istio's ``HTTPRetry``. ``retry_on`` holds Envoy's conditions (``5xx``,
    ``gateway-error``, ``connect-failure``, ``refused-stream``, ``reset``, ``retriable-4xx``,
    ``retriable-status-codes``, ``unavailable``, ``cancelled``...) and numeric status codes."""

    attempts: int = 2
    per_try_timeout: float | str | None = None
    retry_on: list[str] = msgspec.field(
        default_factory=lambda: ["connect-failure", "refused-stream", "unavailable", "cancelled", "503"]
    )
    retriable_status_codes: list[int] = []
    retry_remote_localities: bool = False
    backoff_base_interval: float | str = 0.025
    backoff_max_interval: float | str | None = None

    def __post_init__(self) -> None:
        self._durations("per_try_timeout", "backoff_base_interval", "backoff_max_interval")
        if self.attempts < 0:
            raise ValueError("attempts must not be negative")


class Mirror(_Base, kw_only=True):
    cluster: str
    percentage: float = 100.0

    def __post_init__(self) -> None:
        if not 0 <= self.percentage <= 100:
            raise ValueError("percentage must be within 0..100")


class Rewrite(_Base, kw_only=True):
    uri: str | None = None  # replaces the matched prefix (or the whole path for exact/regex)
    uri_regex: tuple[str, str] | None = None  # (RE2 pattern, substitution)
    authority: str | None = None


class FaultDelay(_Base, kw_only=True):
    fixed_delay: float | str
    percentage: float = 100.0

    def __post_init__(self) -> None:
        self._durations("fixed_delay")
        if not 0 <= self.percentage <= 100:
            raise ValueError("percentage must be within 0..100")


class FaultAbort(_Base, kw_only=True):
    http_status: int
    percentage: float = 100.0

    def __post_init__(self) -> None:
        if not 200 <= self.http_status <= 599:
            raise ValueError("http_status must be within 200..599")
        if not 0 <= self.percentage <= 100:
            raise ValueError("percentage must be within 0..100")


class Fault(_Base, kw_only=True):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class CorsPolicy(_Base, kw_only=True):
    allow_origins: list[StringMatch] = []
    allow_methods: list[str] = []
    allow_headers: list[str] = []
    expose_headers: list[str] = []
    max_age: float | str | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["FORWARD", "IGNORE"] = "FORWARD"

    def __post_init__(self) -> None:
        self._durations("max_age")


class RouteAction(_Base, kw_only=True):
    clusters: list[WeightedCluster]
    timeout: float | str | None = None  # None: no timeout (Istio's default for HTTP)
    retries: RetryPolicy | None = None
    mirrors: list[Mirror] = []
    rewrite: Rewrite | None = None

    def __post_init__(self) -> None:
        self._durations("timeout")
        if not self.clusters:
            raise ValueError("clusters must not be empty")
        if sum(c.weight for c in self.clusters) <= 0:
            raise ValueError("the cluster weights must add up to more than 0")


class Redirect(_Base, kw_only=True):
    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    scheme: str | None = None
    response_code: int = 301

    def __post_init__(self) -> None:
        if self.response_code not in (301, 302, 303, 307, 308):
            raise ValueError("response_code must be one of 301, 302, 303, 307, 308")


class DirectResponse(_Base, kw_only=True):
    status: int
    body: str | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError("status must be within 100..599")


class Route(_Base, kw_only=True):
    """A match and exactly one action (``route``, ``redirect`` or ``direct_response``)."""

    name: str | None = None
    match: RouteMatch = msgspec.field(default_factory=RouteMatch)
    route: RouteAction | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None
    fault: Fault | None = None
    cors: CorsPolicy | None = None
    # Where this route came from (e.g. "VirtualService default/reviews reviews.yaml:12"),
    # for config_dump and explain.
    origin: str | None = None

    def __post_init__(self) -> None:
        n = sum(x is not None for x in (self.route, self.redirect, self.direct_response))
        if n != 1:
            raise ValueError("exactly one of route, redirect, direct_response must be set")


class VirtualHost(_Base, kw_only=True):
    name: str
    domains: list[str]
    routes: list[Route] = []


class RouteConfiguration(_Base, kw_only=True):
    name: str
    virtual_hosts: list[VirtualHost] = []


# --------------------------------------------------------------------------- listeners


class HttpConnectionManager(_Base, kw_only=True):
    route_config: str
    stat_prefix: str | None = None
    max_request_headers_kb: int = 60  # Envoy's default; request line + headers; over -> 431
    max_headers_count: int = 100  # Envoy's default; more request headers -> 431
    max_request_bytes: int | None = None  # body limit; over -> 413
    request_headers_timeout: float | str | None = 10.0  # slow client sending headers -> 408
    idle_timeout: float | str | None = 3600.0  # keep-alive idle; Envoy's default 1h
    stream_idle_timeout: float | str | None = 300.0  # no bytes on a stream for this long
    use_remote_address: bool = False
    generate_request_id: bool = True
    server_name: str = "istio-envoy"
    # "outbound" or "inbound": used for metrics and access log labels.
    traffic_direction: Literal["INBOUND", "OUTBOUND", "UNSPECIFIED"] = "UNSPECIFIED"

    def __post_init__(self) -> None:
        self._durations("request_headers_timeout", "idle_timeout", "stream_idle_timeout")
        if self.max_request_headers_kb < 1:
            raise ValueError("max_request_headers_kb must be at least 1")


class TcpProxy(_Base, kw_only=True):
    cluster: str
    stat_prefix: str | None = None
    idle_timeout: float | str | None = 3600.0

    def __post_init__(self) -> None:
        self._durations("idle_timeout")


class FilterChain(_Base, kw_only=True):
    """Matched on the original destination (for ``use_original_dst`` listeners) or always."""

    name: str | None = None
    destination_port: int | None = None
    destination_ips: list[str] = []  # CIDRs; empty: any
    http: HttpConnectionManager | None = None
    tcp: TcpProxy | None = None

    def __post_init__(self) -> None:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("exactly one of http, tcp must be set")
        for c in self.destination_ips:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"destination_ips: {c!r} is not an address or CIDR") from None


class Listener(_Base, kw_only=True):
    name: str
    address: str = "0.0.0.0"
    port: int
    use_original_dst: bool = False
    filter_chains: list[FilterChain] = []
    default_filter_chain: FilterChain | None = None
    transparent: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be within 0..65535")
        if not self.filter_chains and self.default_filter_chain is None:
            raise ValueError("a listener needs filter_chains or a default_filter_chain")


# --------------------------------------------------------------------------- clusters


class HashPolicy(_Base, kw_only=True):
    """Istio's ``consistentHash``: exactly one key."""

    header_name: str | None = None
    cookie: str | None = None
    cookie_ttl: float | str | None = None
    cookie_path: str | None = None
    use_source_ip: bool = False
    query_parameter: str | None = None

    def __post_init__(self) -> None:
        self._durations("cookie_ttl")
        keys = [self.header_name, self.cookie, self.query_parameter]
        n = sum(k is not None for k in keys) + (1 if self.use_source_ip else 0)
        if n != 1:
            raise ValueError(
                "exactly one of header_name, cookie, use_source_ip, query_parameter must be set"
            )


class CircuitBreakers(_Base, kw_only=True):
    """Istio's ``connectionPool`` settings, with Istio's defaults (effectively unlimited)."""

    max_connections: int = 2**32 - 1
    max_pending_requests: int = 2**32 - 1
    max_requests: int = 2**32 - 1
    max_retries: int = 2**32 - 1
    max_requests_per_connection: int = 0  # 0: unlimited
    idle_timeout: float | str | None = 3600.0

    def __post_init__(self) -> None:
        self._durations("idle_timeout")


class OutlierDetection(_Base, kw_only=True):
    """Istio's ``outlierDetection``. A ``None`` threshold disables that detector."""

    consecutive_5xx: int | None = 5
    consecutive_gateway_failure: int | None = None
    interval: float | str = 10.0
    base_ejection_time: float | str = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failure: int | None = 5

    def __post_init__(self) -> None:
        self._durations("interval", "base_ejection_time")
        if self.interval <= 0:  # type: ignore[operator]
            raise ValueError("interval must be greater than 0")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be within 0..100")
        if not 0 <= self.min_health_percent <= 100:
            raise ValueError("min_health_percent must be within 0..100")


class UpstreamTls(_Base, kw_only=True):
    """Seam for upstream TLS (``ISTIO_MUTUAL``, ``SIMPLE``, ``MUTUAL``): filled in by the
    security issue."""

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] = "DISABLE"
    sni: str | None = None
    secret: str | None = None
    subject_alt_names: list[str] = []


LbPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV", "PASSTHROUGH"]


class Cluster(_Base, kw_only=True):
    name: str
    type: Literal["EDS", "STATIC", "ORIGINAL_DST"] = "EDS"
    lb_policy: LbPolicy = "ROUND_ROBIN"  # Envoy's default; Istio's is LEAST_REQUEST
    hash_policy: HashPolicy | None = None
    ring_size: int = 1024  # ring hash minimum ring size (Istio's default 1024)
    maglev_table_size: int = 65537
    connect_timeout: float | str = 10.0  # Istio's default
    circuit_breakers: CircuitBreakers = msgspec.field(default_factory=CircuitBreakers)
    outlier_detection: OutlierDetection | None = None
    tls: UpstreamTls | None = None
    protocol: Literal["http1", "tcp"] = "http1"
    # Envoy's "alt_stat_name"; Istio fills it for stats (cluster name is the default).
    alt_stat_name: str | None = None
    metadata: dict[str, Any] = {}

    def __post_init__(self) -> None:
        self._durations("connect_timeout")
        if self.ring_size < 1:
            raise ValueError("ring_size must be at least 1")
        if not _is_prime(self.maglev_table_size):
            raise ValueError("maglev_table_size must be a prime number")
        if self.lb_policy in ("RING_HASH", "MAGLEV") and self.hash_policy is None:
            raise ValueError(f"lb_policy {self.lb_policy} needs a hash_policy")


@functools.lru_cache(maxsize=64)
def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


class Endpoint(_Base, kw_only=True):
    address: str
    port: int
    weight: int = 1
    labels: dict[str, str] = {}
    locality: str | None = None  # "region/zone/subzone"
    health: Literal["HEALTHY", "UNHEALTHY", "DRAINING"] = "HEALTHY"

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError("port must be within 1..65535")
        if self.weight < 1:
            raise ValueError("weight must be at least 1")


class ClusterEndpoints(_Base, kw_only=True):
    cluster: str
    endpoints: list[Endpoint] = []


class Secret(_Base, kw_only=True):
    """Seam for workload certificates (filled in by the security issue)."""

    name: str
    certificate_chain: str | None = None
    private_key: str | None = None
    trusted_ca: str | None = None


# --------------------------------------------------------------------------- the snapshot


class Node(_Base, kw_only=True):
    """The proxy's identity: what it tells the control plane when it connects."""

    id: str = "pilotfish~127.0.0.1~standalone.default~default.svc.cluster.local"
    role: Literal["sidecar", "gateway", "standalone"] = "standalone"
    name: str = "standalone"  # the pod name
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    service_account: str = "default"
    ips: list[str] = []  # the workload's addresses
    workload_ports: list[int] = []  # the ports the workload's containers declare
    # REDIRECT: iptables sends the workload's traffic to 15001/15006 (Istio's default).
    # NONE: no interception (Istio's interceptionMode NONE): applications use the sidecar
    # as an explicit HTTP proxy, and the sidecar's inbound listeners bind the workload ports
    # on the workload's address, forwarding to where the application really listens.
    interception: Literal["REDIRECT", "NONE"] = "REDIRECT"
    # NONE mode: workload port -> the app's port on 127.0.0.1 (YAML/JSON keys may be strings)
    app_ports: dict[int | str, int] = {}

    def __post_init__(self) -> None:
        if any(isinstance(k, str) for k in self.app_ports):
            try:
                self.app_ports = {int(k): v for k, v in self.app_ports.items()}
            except ValueError:
                raise ValueError("app_ports: keys must be port numbers") from None
    workload_name: str | None = None
    canonical_service: str | None = None
    canonical_revision: str | None = None
    mesh_id: str = "cluster.local"


class Admin(_Base, kw_only=True):
    address: str = "127.0.0.1"
    port: int = 15000  # 0: an ephemeral port; None disables admin
    enabled: bool = True


class AccessLog(_Base, kw_only=True):
    enabled: bool = True
    format: Literal["text", "json"] = "text"
    path: str = "/dev/stdout"


class ProxyConfig(_Base, kw_only=True):
    version: str = "0"
    node: Node = msgspec.field(default_factory=Node)
    admin: Admin = msgspec.field(default_factory=Admin)
    access_log: AccessLog = msgspec.field(default_factory=AccessLog)
    listeners: list[Listener] = []
    routes: list[RouteConfiguration] = []
    clusters: list[Cluster] = []
    endpoints: list[ClusterEndpoints] = []
    secrets: list[Secret] = []
    drain_timeout: float | str = 5.0

    def __post_init__(self) -> None:
        self._durations("drain_timeout")
        _check_references(self)


class ConfigError(ValueError):
    """A proxy configuration that cannot be loaded; the message names the field."""


def _dupes(names: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({n for n in names if n in seen or seen.add(n)})


def _check_references(cfg: ProxyConfig) -> None:
    """Names must be unique and every reference must resolve."""
    for what, names in (
        ("listeners", [x.name for x in cfg.listeners]),
        ("routes", [x.name for x in cfg.routes]),
        ("clusters", [x.name for x in cfg.clusters]),
        ("endpoints", [x.cluster for x in cfg.endpoints]),
    ):
        d = _dupes(names)
        if d:
            raise ValueError(f"{what}: duplicate names {d}")
    routes = {r.name for r in cfg.routes}
    clusters = {c.name for c in cfg.clusters}
    for li, lst in enumerate(cfg.listeners):
        chains = list(lst.filter_chains)
        if lst.default_filter_chain:
            chains.append(lst.default_filter_chain)
        for fc in chains:
            if fc.http and fc.http.route_config not in routes:
                raise ValueError(
                    f"listeners[{li}] ({lst.name}): route_config {fc.http.route_config!r} is not defined"
                )
            if fc.tcp and fc.tcp.cluster not in clusters:
                raise ValueError(f"listeners[{li}] ({lst.name}): cluster {fc.tcp.cluster!r} is not defined")
    for ri, rc in enumerate(cfg.routes):
        for vi, vh in enumerate(rc.virtual_hosts):
            for i, r in enumerate(vh.routes):
                refs = []
                if r.route:
                    refs += [w.cluster for w in r.route.clusters] + [m.cluster for m in r.route.mirrors]
                for c in refs:
                    if c not in clusters:
                        raise ValueError(
                            f"routes[{ri}].virtual_hosts[{vi}].routes[{i}]: cluster {c!r} is not defined"
                        )
    for ei, ce in enumerate(cfg.endpoints):
        if ce.cluster not in clusters:
            raise ValueError(f"endpoints[{ei}]: cluster {ce.cluster!r} is not defined")


_RULE_ERROR = re.compile(r"(?s)^([a-z_][a-z0-9_]*): (.*) - at `(\$[^`]*)`$")


def validation_message(e: msgspec.ValidationError) -> str:
    """msgspec's message, with the path naming the field. A rule checked in ``__post_init__``
    reports ``field: problem - at `$.path.to.object` ``; this makes it
    ``problem - at `$.path.to.object.field` `` (type errors already name the field)."""
    text = str(e)
    m = _RULE_ERROR.match(text)
    if m is None:
        return text
    field, problem, path = m.groups()
    return f"{problem} - at `{path}.{field}`"


def decode_config(data: Any) -> ProxyConfig:
    """A mapping (from YAML/JSON) -> ProxyConfig, or ConfigError naming the field."""
    try:
        return msgspec.convert(data, ProxyConfig)
    except msgspec.ValidationError as e:
        raise ConfigError(validation_message(e)) from None


def load_config_text(text: str, name: str = "<config>") -> ProxyConfig:
    try:
        data = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the configuration must be a mapping")
    try:
        return decode_config(data)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None


def load_config(path: str) -> ProxyConfig:
    with open(path, encoding="utf-8") as f:
        return load_config_text(f.read(), path)


def to_builtins(cfg: ProxyConfig) -> dict[str, Any]:
    return msgspec.to_builtins(cfg)


def to_json(cfg: ProxyConfig, indent: int = 0) -> str:
    data = msgspec.json.encode(cfg)
    if indent:
        return json.dumps(json.loads(data), indent=indent)
    return data.decode()
