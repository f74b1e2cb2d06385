"""DestinationRule traffic policies -> proxy Clusters.

Which policy applies to a cluster (Istio's ``MergeTrafficPolicy``): the rule's top-level
``trafficPolicy``, overridden field by field (``loadBalancer``, ``connectionPool``,
``outlierDetection``, ``tls``: each replaced whole, not merged inside) by its
``portLevelSettings`` entry for the cluster's port; for a subset cluster, that result is then
overridden the same way by the subset's ``trafficPolicy`` and then by the subset's own
``portLevelSettings`` for the port.

Then each field becomes cluster settings with Istio's defaults:

- ``loadBalancer``: ``simple`` ROUND_ROBIN / LEAST_REQUEST (also the deprecated LEAST_CONN) /
  RANDOM / PASSTHROUGH (an ORIGINAL_DST cluster); unset or UNSPECIFIED: LEAST_REQUEST, Istio's
  default. ``consistentHash``: RING_HASH (``ringHash.minimumRingSize`` or the deprecated
  ``minimumRingSize``, default 1024) or MAGLEV (``maglev.tableSize``, default 65537) with the
  hash key (``httpHeaderName``, ``httpCookie`` {name, path, ttl}, ``useSourceIp``,
  ``httpQueryParameterName``).
- ``connectionPool``: ``tcp.maxConnections``, ``http.http1MaxPendingRequests``,
  ``http.http2MaxRequests``, ``http.maxRetries`` (0 or unset: unlimited, 2^32-1),
  ``http.maxRequestsPerConnection``, idle timeout (``http.idleTimeout``, else
  ``tcp.idleTimeout``, else 1h), ``tcp.connectTimeout`` (default 10s).
- ``outlierDetection`` (only when present): ``consecutive5xxErrors`` (default 5, 0 disables),
  ``consecutiveGatewayErrors`` (unset or 0: disabled), ``interval`` (10s),
  ``baseEjectionTime`` (30s), ``maxEjectionPercent`` (10), ``minHealthPercent`` (0),
  ``splitExternalLocalOriginErrors`` with ``consecutiveLocalOriginFailures`` (5).
- ``tls``: carried to ``Cluster.tls`` through the security seam (see :mod:`.security`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pilotfish.api import defaults
from pilotfish.api.duration import parse_duration
from pilotfish.api.types import networking as net
from pilotfish.proxy import model

__all__ = ["Policy", "effective_policy", "cluster_settings", "duration"]

UNLIMITED = defaults.UNLIMITED


def duration(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    return parse_duration(value)


@dataclass(frozen=True, slots=True)
class Policy:
    """The four traffic-policy fields that apply to one cluster."""

    load_balancer: net.LoadBalancerSettings | None = None
    connection_pool: net.ConnectionPoolSettings | None = None
    outlier_detection: net.OutlierDetection | None = None
    tls: net.ClientTLSSettings | None = None


_EMPTY = Policy()


def _override(base: Policy, src: Any) -> Policy:
    return Policy(
        src.load_balancer if src.load_balancer is not None else base.load_balancer,
        src.connection_pool if src.connection_pool is not None else base.connection_pool,
        src.outlier_detection if src.outlier_detection is not None else base.outlier_detection,
        src.tls if src.tls is not None else base.tls,
    )


def _with_port(base: Policy, tp: net.TrafficPolicy, port: int) -> Policy:
    out = _override(base, tp)
    for pls in tp.port_level_settings:
        if pls.port is not None and pls.port.number == port:
            return _override(out, pls)
    return out


def effective_policy(host_policy: net.TrafficPolicy | None, subset_policy: net.TrafficPolicy | None,
                     port: int) -> Policy:
    """The policy of the cluster for ``port`` (and a subset): see the module docstring."""
    out = _EMPTY
    if host_policy is not None:
        out = _with_port(out, host_policy, port)
    if subset_policy is not None:
        out = _with_port(out, subset_policy, port)
    return out


def _hash_policy(ch: net.ConsistentHashLB) -> model.HashPolicy | None:
    if ch.http_header_name:
        return model.HashPolicy(header_name=ch.http_header_name)
    if ch.http_cookie is not None:
        c = ch.http_cookie
        return model.HashPolicy(cookie=c.name, cookie_path=c.path or None, cookie_ttl=duration(c.ttl))
    if ch.use_source_ip:
        return model.HashPolicy(use_source_ip=True)
    if ch.http_query_parameter_name:
        return model.HashPolicy(query_parameter=ch.http_query_parameter_name)
    return None


def cluster_settings(policy: Policy) -> dict[str, Any]:
    """Keyword arguments for :class:`model.Cluster` from a policy (Istio's defaults filled)."""
    out: dict[str, Any] = {"lb_policy": defaults.DEFAULT_LB, "connect_timeout": defaults.DEFAULT_CONNECT_TIMEOUT_S}
    lb = policy.load_balancer
    if lb is not None:
        if lb.consistent_hash is not None:
            ch = lb.consistent_hash
            hp = _hash_policy(ch)
            if hp is not None:  # no key: nothing to hash on, keep the default balancer
                out["hash_policy"] = hp
                if ch.maglev is not None:
                    out["lb_policy"] = "MAGLEV"
                    if ch.maglev.table_size:
                        out["maglev_table_size"] = ch.maglev.table_size
                else:
                    out["lb_policy"] = "RING_HASH"
                    size = (ch.ring_hash.minimum_ring_size if ch.ring_hash is not None else 0) or ch.minimum_ring_size
                    out["ring_size"] = size or defaults.RING_HASH_MINIMUM_RING_SIZE
        elif lb.simple in ("ROUND_ROBIN", "RANDOM"):
            out["lb_policy"] = lb.simple
        elif lb.simple == "PASSTHROUGH":
            out["lb_policy"] = "PASSTHROUGH"
            out["type"] = "ORIGINAL_DST"
        # LEAST_REQUEST, LEAST_CONN (deprecated alias), UNSPECIFIED, unset: LEAST_REQUEST
    cb: dict[str, Any] = {}
    cp = policy.connection_pool
    if cp is not None:
        idle = None
        if cp.http is not None:
            h = cp.http
            if h.http2_max_requests > 0:
                cb["max_requests"] = h.http2_max_requests
            if h.http1_max_pending_requests > 0:
                cb["max_pending_requests"] = h.http1_max_pending_requests
            if h.max_retries > 0:
                cb["max_retries"] = h.max_retries
            if h.max_requests_per_connection > 0:
                cb["max_requests_per_connection"] = h.max_requests_per_connection
            idle = duration(h.idle_timeout)
        if cp.tcp is not None:
            t = cp.tcp
            if t.max_connections > 0:
                cb["max_connections"] = t.max_connections
            ct = duration(t.connect_timeout)
            if ct is not None:
                out["connect_timeout"] = ct
            if idle is None:
                idle = duration(t.idle_timeout)
        if idle is not None:
            cb["idle_timeout"] = idle or None  # 0s: never close idle connections
    if cb:
        out["circuit_breakers"] = model.CircuitBreakers(**cb)
    od = policy.outlier_detection
    if od is not None:
        out["outlier_detection"] = _outlier(od)
    return out


def _outlier(od: net.OutlierDetection) -> model.OutlierDetection:
    d = defaults.OUTLIER_DETECTION
    kw: dict[str, Any] = {}
    c5 = od.consecutive_5xx_errors
    kw["consecutive_5xx"] = d["consecutive5xxErrors"] if c5 is None else (c5 or None)
    kw["consecutive_gateway_failure"] = od.consecutive_gateway_errors or None
    kw["interval"] = duration(od.interval) or d["interval_s"]
    kw["base_ejection_time"] = duration(od.base_ejection_time) or d["baseEjectionTime_s"]
    if od.max_ejection_percent is not None and od.max_ejection_percent > 0:
        kw["max_ejection_percent"] = min(od.max_ejection_percent, 100)
    if od.min_health_percent is not None and od.min_health_percent >= 0:
        kw["min_health_percent"] = min(od.min_health_percent, 100)
    if od.split_external_local_origin_errors:
        kw["split_external_local_origin_errors"] = True
        kw["consecutive_local_origin_failure"] = od.consecutive_local_origin_failures or 5
    return model.OutlierDetection(**kw)
