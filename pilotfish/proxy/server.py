"""The proxy process: holds the current snapshot, swaps in new ones atomically, owns the
listeners, the admin endpoint and the telemetry sinks.

A snapshot is compiled (route tables, cluster runtimes) when it arrives, not per request.
Swapping is one attribute assignment: each request reads ``proxy.snapshot`` once when it
starts and keeps that snapshot to its end, so requests in flight finish on the old
configuration while new requests use the new one. Clusters whose settings did not change keep
their runtime (pools, outlier state, counters); listeners that stay keep their socket.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pilotfish.gcpolicy import LongLivedGC
from pilotfish.proxy import model
from pilotfish.proxy.accesslog import AccessLogger
from pilotfish.proxy.cluster import ClusterRuntime
from pilotfish.proxy.listener import ListenerRuntime
from pilotfish.proxy.router import Router
from pilotfish.proxy.stats import HttpStats, ServerStats
from pilotfish.proxy.telemetry import IstioMetrics

RECORD_INTERVAL = 0.1  # seconds a finished request may wait for the access log and sinks
RECORD_BATCH = 16  # ... or until this many are pending (small batches: short pauses, good p99)

log = logging.getLogger("pilotfish.proxy")


class Snapshot:
    """A compiled ProxyConfig."""

    __slots__ = ("cfg", "version", "router", "clusters", "endpoint_updates")

    def __init__(self, cfg: model.ProxyConfig, router: Router, clusters: dict[str, ClusterRuntime],
                 endpoint_updates: list[tuple[ClusterRuntime, list[model.Endpoint]]]) -> None:
        self.cfg = cfg
        self.version = cfg.version
        self.router = router
        self.clusters = clusters
        # endpoints of clusters carried over from the previous snapshot: applied only when
        # this snapshot is committed, so that a rejected snapshot changes nothing
        self.endpoint_updates = endpoint_updates

    def commit_endpoints(self) -> None:
        for rt, eps in self.endpoint_updates:
            rt.set_endpoints(eps)
        self.endpoint_updates = []


class ConfigRejected(Exception):
    """A snapshot that could not be applied (the previous one stays in force)."""


class Proxy:
    def __init__(self, cfg: model.ProxyConfig) -> None:
        self.server_stats = ServerStats()
        self.http_stats: dict[str, HttpStats] = {}
        self.listeners: dict[str, ListenerRuntime] = {}
        self.snapshot: Snapshot = self._compile(cfg, None)
        self.access_log: AccessLogger | None = None
        # per-request telemetry: each sink is called with every finished request
        self.metrics = IstioMetrics(cfg.node)
        self.sinks: list[Callable[[Any], None]] = [self.metrics]
        self._records: list[Any] = []  # finished requests not yet handed to the log and sinks
        self._record_handle: asyncio.TimerHandle | None = None
        self.last_error: str | None = None
        self.last_rejected_version: str | None = None
        self.admin: Any = None
        self.ready = False
        self.draining = False
        self._stopped: asyncio.Future | None = None
        self.config_path: str | None = None
        # Hooks for the discovery client (pilotfish.proxy.discovery_client.attach): whether
        # start() makes the proxy ready
        # (without a bootstrap snapshot it is ready once the first one is applied), the
        # client itself, and callbacks run when the proxy starts draining.
        self.ready_on_start = True
        self.discovery: Any = None
        self.on_drain: list[Callable[[], Any]] = []
        # snapshots are long-lived: collections skip them once applied (pilotfish.gcpolicy)
        self.gc = LongLivedGC(interval=300.0)
        self._configure_access_log(cfg.access_log)

    # ------------------------------------------------------------------ snapshots
    def _compile(self, cfg: model.ProxyConfig, prev: Snapshot | None) -> Snapshot:
        router = Router(cfg.routes, cfg.node.labels, cfg.node.namespace)
        eps = {ce.cluster: ce.endpoints for ce in cfg.endpoints}
        old = prev.clusters if prev is not None else {}
        clusters: dict[str, ClusterRuntime] = {}
        updates: list[tuple[ClusterRuntime, list[model.Endpoint]]] = []
        for c in cfg.clusters:
            rt = old.get(c.name)
            if rt is not None and (rt.cfg is c or rt.cfg == c):  # deltas reuse unchanged objects
                updates.append((rt, eps.get(c.name, [])))
            else:
                rt = ClusterRuntime(c, eps.get(c.name, []))
            clusters[c.name] = rt
        return Snapshot(cfg, router, clusters, updates)

    async def apply(self, cfg: model.ProxyConfig) -> None:
        """Swap in a new snapshot; raise ConfigRejected and keep the old one on failure."""
        prev = self.snapshot
        try:
            snap = self._compile(cfg, prev)
            for lc in cfg.listeners:  # chains must build before anything is bound or swapped
                ListenerRuntime.check(lc)
        except Exception as e:
            self._reject(cfg.version, f"cannot compile: {e}")
        new_listeners: dict[str, ListenerRuntime] = {}
        bound: list[ListenerRuntime] = []
        kept: dict[str, model.Listener] = {}
        try:
            for lc in cfg.listeners:
                cur = self.listeners.get(lc.name)
                if cur is not None and (cur.cfg.address, cur.cfg.port, cur.cfg.transparent) == (
                    lc.address, lc.port, lc.transparent
                ):
                    kept[lc.name] = lc
                    new_listeners[lc.name] = cur
                    continue
                lr = ListenerRuntime(self, lc)
                await lr.bind()
                bound.append(lr)
                new_listeners[lc.name] = lr
        except OSError as e:
            for lr in bound:
                lr.close()
            self._reject(cfg.version, f"listener {lc.name}: cannot bind {lc.address}:{lc.port}: {e.strerror or e}")
        # commit: from here on nothing fails
        for name, lc in kept.items():
            self.listeners[name].configure(lc)
        for name, lr in self.listeners.items():
            if name not in new_listeners:
                lr.close()
        self.listeners = new_listeners
        old_clusters = prev.clusters
        snap.commit_endpoints()
        self.snapshot = snap
        for name, rt in old_clusters.items():
            if snap.clusters.get(name) is not rt:
                rt.close()  # idle connections close now; busy ones when released
        for rt in snap.clusters.values():
            rt.start()
        if cfg.access_log != prev.cfg.access_log:
            self._configure_access_log(cfg.access_log)
        self.metrics.node = cfg.node
        self.server_stats.config_updates += 1
        self.server_stats.version = cfg.version
        self.server_stats.listeners_active = len(self.listeners)
        self.last_error = None
        self.gc.settled()

    def note_rejected(self, version: str | None, msg: str) -> None:
        self.server_stats.config_rejected += 1
        self.last_error = msg
        self.last_rejected_version = version

    def _reject(self, version: str, msg: str) -> None:
        self.note_rejected(version, msg)
        raise ConfigRejected(msg)

    async def start(self) -> None:
        """Bind the initial snapshot's listeners (the initial snapshot is already compiled)."""
        cfg = self.snapshot.cfg
        for lc in cfg.listeners:
            lr = ListenerRuntime(self, lc)
            await lr.bind()
            self.listeners[lc.name] = lr
        for rt in self.snapshot.clusters.values():
            rt.start()
        self.server_stats.listeners_active = len(self.listeners)
        self.server_stats.version = cfg.version
        if cfg.admin.enabled:
            from pilotfish.proxy.admin import AdminServer

            self.admin = AdminServer(self)
            await self.admin.start(cfg.admin.address, cfg.admin.port)
        self.ready = self.ready_on_start
        self.gc.start(asyncio.get_running_loop())

    def http_stats_for(self, fc: model.FilterChain, lc: model.Listener) -> HttpStats:
        prefix = None
        if fc.http is not None:
            prefix = fc.http.stat_prefix
        elif fc.tcp is not None:
            prefix = fc.tcp.stat_prefix
        prefix = prefix or lc.name
        st = self.http_stats.get(prefix)
        if st is None:
            st = self.http_stats[prefix] = HttpStats()
        return st

    # ------------------------------------------------------------------ telemetry
    def _configure_access_log(self, al: model.AccessLog) -> None:
        if self.access_log is not None:
            self.flush_records()  # the requests served so far go to the old log
            self.access_log.close()
            self.access_log = None
        if al.enabled:
            self.access_log = AccessLogger(al.path, al.format)

    def record(self, stream: Any) -> None:
        """One finished request, for the access log and the telemetry sinks.

        Requests are handed over in batches (every ``RECORD_INTERVAL`` seconds, or every
        ``RECORD_BATCH`` requests), off the path of the request that just finished: formatting
        a log line and updating histograms cost as much as a request's header processing.
        Everything a record needs is fixed when the stream finishes (its end time included);
        the admin endpoint calls ``flush_records()`` before it reports telemetry.
        """
        pending = self._records
        pending.append(stream)
        if len(pending) >= RECORD_BATCH:
            self.flush_records()
        elif self._record_handle is None:
            self._record_handle = stream.loop.call_later(RECORD_INTERVAL, self.flush_records)

    def flush_records(self) -> None:
        """Hand every pending finished request to the access log and the sinks."""
        if self._record_handle is not None:
            self._record_handle.cancel()
            self._record_handle = None
        pending = self._records
        if not pending:
            return
        self._records = []
        al = self.access_log
        if al is not None:
            al.log_batch(pending)
        for sink in self.sinks:
            for stream in pending:
                sink(stream)

    def record_tcp(self, conn: Any) -> None:
        al = self.access_log
        if al is not None:
            al.buf.append(conn.log_line())
            al.flush()

    def log_protocol_error(self, conn: Any, status: int, details: str) -> None:
        al = self.access_log
        if al is None:
            return
        import time

        from pilotfish.proxy.accesslog import _iso

        al.buf.append(
            f'[{_iso(time.time())}] "- - HTTP/1.1" {status} DPE {details} - "-" 0 0 0 - "-" "-" "-" "-" '
            f'"-" - - {conn.local_address} {conn.remote_address} - -\n'
        )
        al.flush()

    def log_internal_error(self, stream: Any, e: BaseException) -> None:
        sys.stderr.write(f"pilotfish: internal error serving {stream.method} {stream.log_path}:\n")
        traceback.print_exception(e, file=sys.stderr)

    # ------------------------------------------------------------------ lifecycle
    async def drain_and_stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to drain_timeout), stop."""
        if self.draining:
            return
        self.draining = True
        self.gc.stop()
        for cb in self.on_drain:
            cb()
        for lr in self.listeners.values():
            lr.close()
        timeout = float(self.snapshot.cfg.drain_timeout)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end and any(lr.connections for lr in self.listeners.values()):
            await asyncio.sleep(0.05)
        for lr in self.listeners.values():
            for c in list(lr.connections):
                t = getattr(c, "transport", None)
                if t is not None:
                    t.close()
        for rt in self.snapshot.clusters.values():
            rt.close()
        if self.admin is not None:
            self.admin.close()
        self.flush_records()
        if self.access_log is not None:
            self.access_log.close()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def reload_file(self) -> None:
        if not self.config_path:
            return
        try:
            cfg = model.load_config(self.config_path)
            await self.apply(cfg)
            sys.stderr.write(f"pilotfish: applied config version {cfg.version}\n")
        except (model.ConfigError, OSError) as e:
            self.note_rejected(None, str(e))
            sys.stderr.write(f"pilotfish: config rejected, keeping version {self.snapshot.version}: {e}\n")
        except ConfigRejected as e:
            sys.stderr.write(f"pilotfish: config rejected, keeping version {self.snapshot.version}: {e}\n")

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(self.drain_and_stop()))
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload_file()))
        await self._stopped


def check_config(cfg: model.ProxyConfig) -> None:
    """Everything a snapshot must pass before it can serve (route tables compile, load
    balancers build, chains build); raises ValueError naming the problem."""
    Router(cfg.routes, cfg.node.labels, cfg.node.namespace)
    eps = {ce.cluster: ce.endpoints for ce in cfg.endpoints}
    for c in cfg.clusters:
        try:
            ClusterRuntime(c, eps.get(c.name, []))
        except ValueError as e:
            raise ValueError(f"cluster {c.name}: {e}") from None
    for lc in cfg.listeners:
        try:
            ListenerRuntime.check(lc)
        except ValueError as e:
            raise ValueError(f"listener {lc.name}: {e}") from None


def run(cfg: model.ProxyConfig, config_path: str | None = None, on_ready: Callable[[Proxy], None] | None = None,
        setup: Callable[[Proxy], None] | None = None) -> int:
    """Run a proxy until it is stopped. ``setup`` is called before ``Proxy.start()`` (to set
    hooks), ``on_ready`` after it, inside the running loop (to start tasks)."""
    try:
        import uvloop

        uvloop.install() if sys.version_info < (3, 12) else None
        runner = uvloop.run if sys.version_info >= (3, 12) else asyncio.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run

    async def main() -> int:
        try:
            proxy = Proxy(cfg)
        except ValueError as e:
            sys.stderr.write(f"pilotfish: invalid configuration: {e}\n")
            return 2
        proxy.config_path = config_path
        if setup is not None:
            setup(proxy)
        try:
            await proxy.start()
        except OSError as e:
            sys.stderr.write(f"pilotfish: cannot start: {e}\n")
            return 1
        if on_ready is not None:
            on_ready(proxy)
        await proxy.serve_forever()
        return 0

    return runner(main())
