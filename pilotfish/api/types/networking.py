"""``networking.istio.io`` kinds: Gateway, VirtualService, DestinationRule, ServiceEntry,
Sidecar, WorkloadEntry and WorkloadGroup (API versions v1, v1beta1 and v1alpha3 share one
schema).

Field names and meanings are Istio's (istio.io/latest/docs/reference/config/networking/).
Defaults are the values Istio uses when a field is omitted inside a message that is present:
enum fields default to the enum's first value, as in protobuf, so ``tls: {}`` is
``mode: DISABLE`` for a DestinationRule and ``mode: PASSTHROUGH`` for a Gateway server. Fields
Istio reads as "unset means the mesh default" (protobuf wrapper types) are ``None`` when
omitted; the documented mesh defaults for those live in :mod:`pilotfish.api.defaults`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from pilotfish.api.schema import Duration, Int32, MinDuration, Model, UInt32
from pilotfish.api.types.common import (
    Destination,
    LabelsSelector,
    Percent,
    PortSelector,
    WorkloadSelector,
)
from pilotfish.api.types.meta import TypedObject

# --- shared ------------------------------------------------------------------------------------


class StringMatch(Model):
    """Exactly one of ``exact``, ``prefix`` or ``regex`` (RE2 syntax)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    _oneofs = (("exact", "prefix", "regex"),)


class HeaderOperations(Model):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class Headers(Model):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


# --- Gateway ---------------------------------------------------------------------------------


class Port(Model):
    """A gateway server port. ``protocol`` is one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO,
    TCP, TLS, UDP, MYSQL, REDIS (case-insensitive)."""

    number: UInt32
    protocol: str
    name: str
    target_port: UInt32 = 0  # deprecated, no effect on gateways


class TLSCertificate(Model):
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""


TLSProtocolVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class ServerTLSSettings(Model):
    https_redirect: bool = False
    mode: Literal[
        "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
    ] = "PASSTHROUGH"
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    credential_names: list[str] = []
    tls_certificates: list[TLSCertificate] = []
    ca_cert_credential_name: str = ""
    subject_alt_names: list[str] = []
    verify_certificate_spki: list[str] = []
    verify_certificate_hash: list[str] = []
    min_protocol_version: TLSProtocolVersion = "TLS_AUTO"
    max_protocol_version: TLSProtocolVersion = "TLS_AUTO"
    cipher_suites: list[str] = []

    _oneofs = (("credentialNames", "tlsCertificates"), ("credentialName", "credentialNames"))


class Server(Model):
    port: Port
    hosts: list[str]
    bind: str = ""
    tls: ServerTLSSettings | None = None
    default_endpoint: str = ""
    name: str = ""


class GatewaySpec(Model):
    servers: list[Server] = []
    selector: dict[str, str] = {}


class Gateway(TypedObject):
    spec: GatewaySpec = msgspec.field(default_factory=GatewaySpec)
    status: Any = None


# --- VirtualService --------------------------------------------------------------------------


class HTTPMatchRequest(Model):
    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = {}
    port: UInt32 = 0
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    query_params: dict[str, StringMatch] = {}
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = {}
    source_namespace: str = ""
    stat_prefix: str = ""


class HTTPRouteDestination(Model):
    destination: Destination
    weight: Int32 = 0  # relative; a single destination gets all the traffic
    headers: Headers | None = None


class RouteDestination(Model):
    destination: Destination
    weight: Int32 = 0


class HTTPRedirect(Model):
    uri: str = ""
    authority: str = ""
    port: UInt32 | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str = ""
    redirect_code: UInt32 = 0  # 0 means 301 (MOVED_PERMANENTLY)

    _oneofs = (("port", "derivePort"),)


class HTTPBody(Model):
    string: str | None = None
    bytes: str | None = None  # base64

    _oneofs = (("string", "bytes"),)


class HTTPDirectResponse(Model):
    status: UInt32
    body: HTTPBody | None = None


class Delegate(Model):
    name: str = ""
    namespace: str = ""


class RegexRewrite(Model):
    match: str = ""
    rewrite: str = ""


class HTTPRewrite(Model):
    uri: str = ""
    authority: str = ""
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetry(Model):
    """Retries of one route. ``attempts: 0`` disables retries; when ``retries`` is omitted the
    mesh default applies (see :data:`pilotfish.api.defaults.DEFAULT_RETRY`)."""

    attempts: Int32 = 0
    per_try_timeout: MinDuration | None = None
    retry_on: str = ""
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: MinDuration | None = None


class CorsPolicy(Model):
    allow_origins: list[StringMatch] = []
    allow_origin: list[str] = []  # deprecated, use allowOrigins
    allow_methods: list[str] = []
    allow_headers: list[str] = []
    expose_headers: list[str] = []
    max_age: MinDuration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] = "UNSPECIFIED"


class FaultDelay(Model):
    fixed_delay: MinDuration | None = None
    exponential_delay: MinDuration | None = None
    percent: Int32 = 0  # deprecated, use percentage
    percentage: Percent | None = None

    _oneofs = (("fixedDelay", "exponentialDelay"),)


class FaultAbort(Model):
    http_status: Int32 | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None

    _oneofs = (("httpStatus", "grpcStatus", "http2Error"),)


class HTTPFaultInjection(Model):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HTTPMirrorPolicy(Model):
    destination: Destination
    percentage: Percent | None = None


class HTTPRoute(Model):
    name: str = ""
    match: list[HTTPMatchRequest] = []
    route: list[HTTPRouteDestination] = []
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: MinDuration | None = None  # None: no timeout (Istio's default is disabled)
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = []
    mirror_percent: UInt32 | None = None  # deprecated, use mirrorPercentage
    mirror_percent_legacy: UInt32 | None = msgspec.field(default=None, name="mirror_percent")
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


class TLSMatchAttributes(Model):
    sni_hosts: list[str]
    destination_subnets: list[str] = []
    port: UInt32 = 0
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    source_namespace: str = ""


class TLSRoute(Model):
    match: list[TLSMatchAttributes]
    route: list[RouteDestination] = []


class L4MatchAttributes(Model):
    destination_subnets: list[str] = []
    port: UInt32 = 0
    source_subnet: str = ""  # deprecated, no effect
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    source_namespace: str = ""


class TCPRoute(Model):
    match: list[L4MatchAttributes] = []
    route: list[RouteDestination] = []


class VirtualServiceSpec(Model):
    hosts: list[str] = []
    gateways: list[str] = []  # empty means the reserved gateway "mesh" (all sidecars)
    http: list[HTTPRoute] = []
    tls: list[TLSRoute] = []
    tcp: list[TCPRoute] = []
    export_to: list[str] = []


class VirtualService(TypedObject):
    spec: VirtualServiceSpec = msgspec.field(default_factory=VirtualServiceSpec)
    status: Any = None


# --- DestinationRule -------------------------------------------------------------------------


class HTTPCookieAttribute(Model):
    name: str
    value: str = ""


class HTTPCookie(Model):
    name: str
    path: str = ""
    ttl: Duration | None = None  # 0s: a session cookie
    attributes: list[HTTPCookieAttribute] = []


class RingHash(Model):
    minimum_ring_size: UInt32 = 0  # Envoy's default 1024 when 0


class MagLev(Model):
    table_size: UInt32 = 0  # Envoy's default 65537 when 0


class ConsistentHashLB(Model):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: UInt32 = 0  # deprecated, use ringHash

    _oneofs = (
        ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"),
        ("ringHash", "maglev"),
    )


class LocalityDistribute(Model):
    from_: str = msgspec.field(default="", name="from")
    to: dict[str, UInt32] = {}


class LocalityFailover(Model):
    from_: str = msgspec.field(default="", name="from")
    to: str = ""


class LocalityLoadBalancerSetting(Model):
    distribute: list[LocalityDistribute] = []
    failover: list[LocalityFailover] = []
    failover_priority: list[str] = []
    enabled: bool | None = None


class WarmupConfiguration(Model):
    duration: MinDuration
    minimum_percent: float | None = None  # Istio default 10
    aggression: float | None = None  # Istio default 1.0


class LoadBalancerSettings(Model):
    simple: Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"] | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: MinDuration | None = None  # deprecated, use warmup
    warmup: WarmupConfiguration | None = None

    _oneofs = (("simple", "consistentHash"),)


class TcpKeepalive(Model):
    probes: UInt32 = 0  # 0: the OS default (9 on Linux)
    time: MinDuration | None = None  # OS default 7200s
    interval: MinDuration | None = None  # OS default 75s


class TCPSettings(Model):
    max_connections: Int32 = 0  # 0: unlimited (2^32-1)
    connect_timeout: MinDuration | None = None  # mesh default 10s
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: MinDuration | None = None
    idle_timeout: Duration | None = None  # 1h by default


class HTTPSettings(Model):
    http1_max_pending_requests: Int32 = 0  # 0: unlimited
    http2_max_requests: Int32 = 0  # 0: unlimited
    max_requests_per_connection: Int32 = 0  # 0: unlimited
    max_retries: Int32 = 0  # 0: unlimited
    idle_timeout: MinDuration | None = None  # 1h by default
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] = "DEFAULT"
    use_client_protocol: bool = False
    max_concurrent_streams: Int32 = 0  # 0: unlimited


class ConnectionPoolSettings(Model):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Model):
    """Passive health checking. Envoy/Istio defaults for omitted numbers are in
    :data:`pilotfish.api.defaults.OUTLIER_DETECTION`."""

    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: UInt32 | None = None
    consecutive_gateway_errors: UInt32 | None = None
    consecutive_5xx_errors: UInt32 | None = msgspec.field(default=None, name="consecutive5xxErrors")
    consecutive_errors: Int32 = 0  # deprecated
    interval: MinDuration | None = None
    base_ejection_time: MinDuration | None = None
    max_ejection_percent: Int32 | None = None
    min_health_percent: Int32 | None = None


class ClientTLSSettings(Model):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] = "DISABLE"
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    credential_name: str = ""
    subject_alt_names: list[str] = []
    sni: str = ""
    insecure_skip_verify: bool | None = None
    ca_crl: str = ""


class PortTrafficPolicy(Model):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(Model):
    target_host: str
    target_port: UInt32
    protocol: str = ""  # CONNECT (default) or POST


class ProxyProtocol(Model):
    version: Literal["V1", "V2"] = "V1"


class RetryBudget(Model):
    percent: float | None = None  # default 20
    min_retry_concurrency: UInt32 = 0  # default 3 when unset


class TrafficPolicy(Model):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = []
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


class Subset(Model):
    name: str
    labels: dict[str, str] = {}
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Model):
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = []
    export_to: list[str] = []
    workload_selector: WorkloadSelector | None = None

    def subset(self, name: str) -> Subset | None:
        for s in self.subsets:
            if s.name == name:
                return s
        return None


class DestinationRule(TypedObject):
    spec: DestinationRuleSpec
    status: Any = None


# --- ServiceEntry / WorkloadEntry / WorkloadGroup --------------------------------------------


class ServicePort(Model):
    number: UInt32
    name: str
    protocol: str = ""  # empty: detected
    target_port: UInt32 = 0


class WorkloadEntrySpec(Model):
    address: str = ""
    ports: dict[str, UInt32] = {}
    labels: dict[str, str] = {}
    network: str = ""
    locality: str = ""
    weight: UInt32 = 0
    service_account: str = ""


class ServiceEntrySpec(Model):
    hosts: Annotated[list[str], msgspec.Meta(min_length=1, max_length=256)]
    addresses: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=256)] = []
    ports: Annotated[list[ServicePort], msgspec.Meta(max_length=256)] = []
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] = "NONE"
    endpoints: Annotated[list[WorkloadEntrySpec], msgspec.Meta(max_length=4096)] = []
    workload_selector: LabelsSelector | None = None
    export_to: list[str] = []
    subject_alt_names: list[str] = []


class ServiceEntry(TypedObject):
    spec: ServiceEntrySpec
    status: Any = None


class WorkloadEntry(TypedObject):
    spec: WorkloadEntrySpec = msgspec.field(default_factory=WorkloadEntrySpec)
    status: Any = None


class WorkloadGroupMetadata(Model):
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class HTTPHeaderValue(Model):
    name: str = ""
    value: str = ""


class HTTPHealthCheckConfig(Model):
    port: UInt32
    path: str = ""
    host: str = ""
    scheme: str = ""  # HTTP (default) or HTTPS
    http_headers: list[HTTPHeaderValue] = []


class TCPHealthCheckConfig(Model):
    port: UInt32
    host: str = ""


class ExecHealthCheckConfig(Model):
    command: list[str]


class GrpcHealthCheckConfig(Model):
    port: UInt32 = 0
    service: str = ""


class ReadinessProbe(Model):
    initial_delay_seconds: Int32 = 0
    timeout_seconds: Int32 = 0  # 0: 1s
    period_seconds: Int32 = 0  # 0: 10s
    success_threshold: Int32 = 0  # 0: 1
    failure_threshold: Int32 = 0  # 0: 3
    http_get: HTTPHealthCheckConfig | None = None
    tcp_socket: TCPHealthCheckConfig | None = None
    exec: ExecHealthCheckConfig | None = None
    grpc: GrpcHealthCheckConfig | None = None

    _oneofs = (("httpGet", "tcpSocket", "exec", "grpc"),)


class WorkloadGroupSpec(Model):
    template: WorkloadEntrySpec
    metadata: WorkloadGroupMetadata | None = None
    probe: ReadinessProbe | None = None


class WorkloadGroup(TypedObject):
    spec: WorkloadGroupSpec
    status: Any = None


# --- Sidecar ---------------------------------------------------------------------------------


class SidecarPort(Model):
    number: UInt32 = 0
    protocol: str = ""
    name: str = ""
    target_port: UInt32 = 0  # deprecated, no effect


CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]


class IstioIngressListener(Model):
    port: SidecarPort
    bind: str = ""
    capture_mode: CaptureMode = "DEFAULT"
    default_endpoint: str = ""
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None


class IstioEgressListener(Model):
    hosts: list[str]
    port: SidecarPort | None = None
    bind: str = ""
    capture_mode: CaptureMode = "DEFAULT"


class OutboundTrafficPolicy(Model):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] = "REGISTRY_ONLY"
    egress_proxy: Destination | None = None


class SidecarSpec(Model):
    workload_selector: LabelsSelector | None = None
    ingress: list[IstioIngressListener] = []
    egress: list[IstioEgressListener] = []
    inbound_connection_pool: ConnectionPoolSettings | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None


class Sidecar(TypedObject):
    spec: SidecarSpec = msgspec.field(default_factory=SidecarSpec)
    status: Any = None
