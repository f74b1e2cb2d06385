"""A cluster at run time: its hosts, load balancer, connection pools, circuit breaker counters
and outlier detector.

Runtime clusters outlive configuration snapshots: when a new snapshot keeps a cluster with
the same settings, the same object (pools, outlier state, counters) carries on; when only its
endpoints change, hosts are updated in place, keeping the state of the hosts that stay.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Any

from pilotfish.proxy import model
from pilotfish.proxy.lb import Host, make_lb, reconcile_hosts
from pilotfish.proxy.outlier import OutlierDetector
from pilotfish.proxy.stats import ClusterStats
from pilotfish.proxy.upstream import HostPool


class ClusterRuntime:
    def __init__(self, cfg: model.Cluster, endpoints: list[model.Endpoint]) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.cb = cfg.circuit_breakers
        self.connect_timeout = float(cfg.connect_timeout)  # type: ignore[arg-type]
        self.stats = ClusterStats()
        self.cx_active = 0
        self.rq_pending_active = 0
        self.rq_active = 0
        self.retries_active = 0
        self.waiters: deque[asyncio.Future] = deque()
        self.pools: dict[str, HostPool] = {}
        self.hosts: list[Host] = []
        self.original_dst = cfg.type == "ORIGINAL_DST"
        self.hash_policy = cfg.hash_policy
        self.lb: Any = None
        self.outlier: OutlierDetector | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self.set_endpoints(endpoints)

    # -- endpoints and health
    def set_endpoints(self, endpoints: list[model.Endpoint]) -> None:
        hosts = reconcile_hosts(self.hosts, endpoints)
        keep = {h.key for h in hosts}
        for key in [k for k in self.pools if k not in keep]:  # hosts that left
            self.pools.pop(key).close_all()
        self.hosts = hosts
        if self.lb is None:
            self.lb = make_lb(self.cfg, hosts, random.random)
        else:
            self.lb.update_hosts(hosts)
        od = self.cfg.outlier_detection
        if od is not None:
            if self.outlier is None:
                self.outlier = OutlierDetector(od, hosts, on_change=self.lb.hosts_changed)
            else:
                self.outlier.update_hosts(hosts)
        self.stats.membership_total = len(hosts)

    def start(self) -> None:
        """Start the periodic outlier sweep (needs a running loop)."""
        if self.outlier is not None and self._tick_handle is None:
            self._schedule_tick()

    def _schedule_tick(self) -> None:
        loop = asyncio.get_running_loop()
        # the detector keeps its own (monotonic) schedule; wake just after the sweep is due
        delay = max(0.0, self.outlier.next_tick_at - time.monotonic()) + 0.001  # type: ignore[union-attr]
        self._tick_handle = loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        if self.outlier is not None:
            self.outlier.tick()
            self._schedule_tick()

    def pool_for(self, host: Host) -> HostPool:
        pool = self.pools.get(host.key)
        if pool is None:
            pool = self.pools[host.key] = HostPool(host, self)
        return pool

    def original_dst_host(self, ip: str, port: int) -> Host:
        key = f"{ip}:{port}"
        pool = self.pools.get(key)
        return pool.host if pool is not None else Host(ip, port)

    def close_one_idle(self) -> bool:
        """Close one idle connection (to any host) to make room under max_connections."""
        for pool in self.pools.values():
            conn = pool.take_idle()
            if conn is not None:
                conn.close()
                return True
        return False

    def wake(self) -> None:
        ws = self.waiters
        while ws:
            w = ws.popleft()
            if not w.done():
                w.set_result(None)
                return

    # -- admin
    def extra_stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.outlier is not None:
            for k, v in self.outlier.stats().items():
                out[f"outlier_detection.{k}"] = v
        return out

    def refresh_gauges(self) -> None:
        st = self.stats
        st.upstream_cx_active = self.cx_active
        st.upstream_rq_pending_active = self.rq_pending_active
        st.upstream_rq_active = self.rq_active
        st.membership_total = len(self.hosts)
        st.membership_healthy = sum(1 for h in self.hosts if h.health == "HEALTHY" and not h.ejected)

    def host_rows(self) -> list[str]:
        """Envoy's ``/clusters`` text lines for this cluster."""
        rows = [
            f"{self.name}::default_priority::max_connections::{self.cb.max_connections}",
            f"{self.name}::default_priority::max_pending_requests::{self.cb.max_pending_requests}",
            f"{self.name}::default_priority::max_requests::{self.cb.max_requests}",
            f"{self.name}::default_priority::max_retries::{self.cb.max_retries}",
        ]
        for h in self.hosts:
            p = f"{self.name}::{h.key}"
            pool = self.pools.get(h.key)
            cx = len(pool.active) if pool else 0
            flags = []
            if h.ejected:
                flags.append("/failed_outlier_check")
            if h.health != "HEALTHY":
                flags.append(f"/{h.health.lower()}")
            rows += [
                f"{p}::cx_active::{cx}",
                f"{p}::rq_active::{h.active_requests}",
                f"{p}::weight::{h.weight}",
                f"{p}::health_flags::{''.join(flags) or 'healthy'}",
                f"{p}::region::{(h.locality or '').split('/')[0]}",
            ]
        return rows

    def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        for pool in self.pools.values():
            pool.close_all()
