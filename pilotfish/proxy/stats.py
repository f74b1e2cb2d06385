"""Envoy-named counters and gauges, kept as plain integer attributes.

Incrementing an attribute is the cheapest thing Python can do per request, so stats are
``__slots__`` objects, one per cluster and one per HTTP connection manager, rendered by the
admin endpoint as Envoy's ``/stats`` text (``cluster.<name>.upstream_rq_total: 5``) or as
Prometheus text (``envoy_cluster_upstream_rq_total{envoy_cluster_name="..."} 5``).
"""

from __future__ import annotations

from collections.abc import Iterator


class _Counters:
    """Integer counters named by ``__slots__``, all starting at 0."""

    __slots__ = ()

    def __init__(self) -> None:
        for n in self.__slots__:
            if n != "__weakref__":
                setattr(self, n, 0)

    def items(self) -> Iterator[tuple[str, int]]:
        for n in self.__slots__:
            if n != "__weakref__":
                yield n, getattr(self, n)


class ClusterStats(_Counters):
    __slots__ = (
        "upstream_rq_total",
        "upstream_rq_active",
        "upstream_rq_pending_total",
        "upstream_rq_pending_active",
        "upstream_rq_pending_overflow",
        "upstream_rq_completed",
        "upstream_rq_1xx",
        "upstream_rq_2xx",
        "upstream_rq_3xx",
        "upstream_rq_4xx",
        "upstream_rq_5xx",
        "upstream_rq_timeout",
        "upstream_rq_per_try_timeout",
        "upstream_rq_retry",
        "upstream_rq_retry_success",
        "upstream_rq_retry_overflow",
        "upstream_rq_retry_limit_exceeded",
        "upstream_rq_rx_reset",
        "upstream_rq_tx_reset",
        "upstream_cx_total",
        "upstream_cx_active",
        "upstream_cx_connect_fail",
        "upstream_cx_connect_timeout",
        "upstream_cx_overflow",
        "upstream_cx_destroy",
        "upstream_cx_rx_bytes_total",
        "upstream_cx_tx_bytes_total",
        "membership_total",
        "membership_healthy",
        "membership_degraded",
        "upstream_rq_max_duration_reached",
        "__weakref__",
    )

    # gauges are computed from live objects when rendered
    GAUGES = frozenset(
        {
            "upstream_rq_active",
            "upstream_rq_pending_active",
            "upstream_cx_active",
            "membership_total",
            "membership_healthy",
            "membership_degraded",
        }
    )


    def record_status(self, status: int) -> None:
        c = status // 100
        if c == 2:
            self.upstream_rq_2xx += 1
        elif c == 5:
            self.upstream_rq_5xx += 1
        elif c == 4:
            self.upstream_rq_4xx += 1
        elif c == 3:
            self.upstream_rq_3xx += 1
        else:
            self.upstream_rq_1xx += 1


class HttpStats(_Counters):
    """``http.<stat_prefix>.*``, per HTTP connection manager."""

    __slots__ = (
        "downstream_rq_total",
        "downstream_rq_active",
        "downstream_rq_1xx",
        "downstream_rq_2xx",
        "downstream_rq_3xx",
        "downstream_rq_4xx",
        "downstream_rq_5xx",
        "downstream_rq_completed",
        "downstream_rq_rx_reset",
        "downstream_rq_tx_reset",
        "downstream_rq_timeout",
        "downstream_rq_too_large",
        "downstream_rq_idle_timeout",
        "downstream_rq_header_timeout",
        "downstream_cx_total",
        "downstream_cx_active",
        "downstream_cx_protocol_error",
        "downstream_cx_idle_timeout",
        "downstream_cx_destroy_remote",
        "downstream_cx_rx_bytes_total",
        "downstream_cx_tx_bytes_total",
        "no_route",
        "no_cluster",
        "rq_direct_response",
        "rq_redirect",
        "__weakref__",
    )

    GAUGES = frozenset({"downstream_rq_active", "downstream_cx_active"})


    def record_status(self, status: int) -> None:
        c = status // 100
        if c == 2:
            self.downstream_rq_2xx += 1
        elif c == 5:
            self.downstream_rq_5xx += 1
        elif c == 4:
            self.downstream_rq_4xx += 1
        elif c == 3:
            self.downstream_rq_3xx += 1
        else:
            self.downstream_rq_1xx += 1


class ServerStats:
    __slots__ = ("config_updates", "config_rejected", "version", "listeners_active", "live")

    def __init__(self) -> None:
        self.config_updates = 0
        self.config_rejected = 0
        self.version = "0"
        self.listeners_active = 0
        self.live = 1


def _prom_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def render_text(
    server: ServerStats,
    http: dict[str, HttpStats],
    clusters: dict[str, tuple[ClusterStats, dict[str, int]]],
    filter_: str | None = None,
) -> str:
    """Envoy's ``/stats`` text format, sorted by name."""
    lines: list[str] = []
    lines.append(f"server.config_updates: {server.config_updates}")
    lines.append(f"server.config_rejected: {server.config_rejected}")
    lines.append(f"server.live: {server.live}")
    lines.append(f"server.total_listeners_active: {server.listeners_active}")
    for prefix, st in http.items():
        for n, v in st.items():
            lines.append(f"http.{prefix}.{n}: {v}")
    for name, (st, extra) in clusters.items():
        for n, v in st.items():
            lines.append(f"cluster.{name}.{n}: {v}")
        for n, v in extra.items():
            lines.append(f"cluster.{name}.{n}: {v}")
    lines.sort()
    if filter_:
        lines = [ln for ln in lines if filter_ in ln.split(":", 1)[0]]
    return "\n".join(lines) + "\n"


def render_prometheus(
    server: ServerStats,
    http: dict[str, HttpStats],
    clusters: dict[str, tuple[ClusterStats, dict[str, int]]],
) -> str:
    """Envoy's ``/stats/prometheus`` shape: ``envoy_cluster_<stat>{envoy_cluster_name="x"}``."""
    out: list[str] = []
    seen: set[str] = set()

    def emit(metric: str, gauge: bool, labels: str, value: int) -> None:
        if metric not in seen:
            seen.add(metric)
            out.append(f"# TYPE {metric} {'gauge' if gauge else 'counter'}")
        out.append(f"{metric}{{{labels}}} {value}")

    for prefix, st in http.items():
        for n, v in st.items():
            emit(f"envoy_http_{n}", n in HttpStats.GAUGES, f'envoy_http_conn_manager_prefix="{prefix}"', v)
    for name, (st, extra) in clusters.items():
        lbl = f'envoy_cluster_name="{name}"'
        for n, v in st.items():
            emit(f"envoy_cluster_{n}", n in ClusterStats.GAUGES, lbl, v)
        for n, v in extra.items():
            emit(f"envoy_cluster_{_prom_name(n)}", n.endswith("_active"), lbl, v)
    out.append("# TYPE envoy_server_live gauge")
    out.append(f"envoy_server_live {server.live}")
    return "\n".join(out) + "\n"
