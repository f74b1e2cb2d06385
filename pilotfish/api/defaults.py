"""Istio's documented defaults for settings a user leaves out entirely.

The models' own field defaults cover fields omitted *inside* a message that is present. These
constants cover whole messages left out (no ``retries`` on a route, no ``outlierDetection``...)
and the "unset means the mesh default" wrapper fields, as Istio documents them.
"""

from __future__ import annotations

#: Retries of an HTTP route without a ``retries`` block (MeshConfig ``defaultHttpRetryPolicy``).
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRIABLE_STATUS_CODES = (503,)
DEFAULT_RETRY_BACKOFF_S = 0.025  # Envoy's base interval
DEFAULT_RETRY_IGNORE_PREVIOUS_HOSTS = True

#: HTTP route timeout: none (disabled) unless set.
DEFAULT_ROUTE_TIMEOUT_S: float | None = None

#: Upstream connect timeout (MeshConfig ``connectTimeout``).
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: Idle timeout of upstream HTTP connections.
DEFAULT_HTTP_IDLE_TIMEOUT_S = 3600.0
#: Idle timeout of TCP proxying.
DEFAULT_TCP_IDLE_TIMEOUT_S = 3600.0

#: Connection pool limits when unset ("unlimited", Envoy's 2^32-1).
UNLIMITED = 2**32 - 1

#: Outlier detection values when ``outlierDetection`` is present but a field is not.
OUTLIER_DETECTION = {
    "consecutive5xxErrors": 5,
    "consecutiveGatewayErrors": 0,  # 0: disabled
    "interval_s": 10.0,
    "baseEjectionTime_s": 30.0,
    "maxEjectionPercent": 10,
    "minHealthPercent": 0,
}

#: Consistent hash defaults (Envoy): ring size and Maglev table size.
RING_HASH_MINIMUM_RING_SIZE = 1024
MAGLEV_TABLE_SIZE = 65537

#: Load-balancer when ``loadBalancer`` is unset or ``simple: UNSPECIFIED``.
DEFAULT_LB = "LEAST_REQUEST"

#: Mesh-wide mTLS mode when no PeerAuthentication applies (``UNSET`` inherits up to this).
DEFAULT_PEER_MTLS_MODE = "PERMISSIVE"

#: Sidecar outbound traffic policy when no Sidecar sets one (MeshConfig ``outboundTrafficPolicy``).
DEFAULT_OUTBOUND_TRAFFIC_POLICY = "ALLOW_ANY"

#: JWKS fetch timeout of a RequestAuthentication rule.
DEFAULT_JWKS_TIMEOUT_S = 5.0
#: Where a JWT is looked for when a rule names no location.
DEFAULT_JWT_HEADER = ("Authorization", "Bearer ")
DEFAULT_JWT_QUERY_PARAM = "access_token"

#: Tracing sampling when Telemetry does not set it (MeshConfig default).
DEFAULT_TRACE_SAMPLING_PERCENT = 1.0

#: Redirect status when ``redirectCode`` is 0.
DEFAULT_REDIRECT_CODE = 301

#: Warmup defaults when ``warmup`` is set without these.
WARMUP_MINIMUM_PERCENT = 10.0
WARMUP_AGGRESSION = 1.0

#: Retry budget defaults.
RETRY_BUDGET_PERCENT = 20.0
RETRY_BUDGET_MIN_CONCURRENCY = 3
