"""One request's life in the proxy, in the order it travels:

filters (fault, CORS, header edits) -> router (route, weighted cluster, rewrite, mirror) ->
cluster (load balancer, circuit breaker, pool) -> upstream exchange with timeouts and
retries -> response back through the filters -> telemetry (stats, access log).

A :class:`Stream` is also the sink of the upstream connection: response head and body come
back through synchronous callbacks and are written to the client at once, so the common path
needs no queue and only one coroutine hop (awaiting the end of the response).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any

from pilotfish.proxy.filters import Delay, apply_request_ops, apply_response_ops
from pilotfish.proxy.http import (
    CONTINUE_100,
    DC,
    DI,
    HOP_BY_HOP,
    NR,
    REASONS,
    UC,
    UF,
    UH,
    UO,
    UPE,
    URX,
    UT,
    LocalReply,
    status_line,
)
from pilotfish.proxy.lb import new_cookie
from pilotfish.proxy.retry import RetryState
from pilotfish.proxy.upstream import ConnectFailure, PoolOverflow

if TYPE_CHECKING:
    from pilotfish.proxy.cluster import ClusterRuntime
    from pilotfish.proxy.codec import DownstreamConnection
    from pilotfish.proxy.http import Request
    from pilotfish.proxy.upstream import UpstreamConnection

RETRY_BUFFER_LIMIT = 1024 * 1024  # Envoy's default per-connection buffer limit
PENDING_BODY_LIMIT = 64 * 1024  # buffered before an upstream is ready; reading pauses beyond
_random = random.random
_getrandbits = random.getrandbits

# local reply bodies as Envoy writes them
BODY_UH = "no healthy upstream"
BODY_UO = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
BODY_UF = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
BODY_UC = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
BODY_UT = "upstream request timeout"
BODY_UPE = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"


def local_reply_bytes(status: int, body: str | bytes, close: bool = False,
                      headers: list[tuple[str, str]] | None = None, head_only: bool = False,
                      server: str = "istio-envoy") -> bytes:
    b = body.encode() if isinstance(body, str) else body
    parts = [status_line(status)]
    ctype = True
    for n, v in headers or ():
        if n == "content-type":
            ctype = False
        parts.append(f"{n}: {v}\r\n".encode("latin-1"))
    if b and ctype:
        parts.append(b"content-type: text/plain\r\n")
    if status not in (204, 304) and not (100 <= status < 200):
        parts.append(f"content-length: {len(b)}\r\n".encode())
    parts.append(f"date: {_http_date()}\r\nserver: {server}\r\n".encode())
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only and status not in (204, 304):
        parts.append(b)
    return b"".join(parts)


_DATE_CACHE: list[Any] = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _DATE_CACHE[0] != now:
        _DATE_CACHE[0] = now
        _DATE_CACHE[1] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
    return _DATE_CACHE[1]


# Connection tokens that name nothing left to drop from a response (hop-by-hop headers are
# dropped anyway; "close" is an option, not a header)
_DROPPED_ANYWAY = HOP_BY_HOP | {"close"}


def _response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    return status_line(status) + "".join([f"{n}: {v}\r\n" for n, v in headers]).encode("latin-1") + b"\r\n"


def new_request_id() -> str:
    """A version-4 UUID string (from a fast PRNG, as Envoy's request ids are)."""
    h = f"{_getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


class Stream:
    """A request/response exchange on a downstream connection; also the access-log record."""

    __slots__ = (
        "conn", "req", "has_body", "keep_alive", "loop", "task",
        "body_complete", "pending", "pending_bytes", "replay", "replay_ok", "chunked_up",
        "upstream", "fut", "response_started", "resp_chunked", "resp_head_only",
        "status", "flags", "details", "transport_failure", "bytes_received", "bytes_sent",
        "t0", "t_end", "start_wall", "upstream_host", "cluster_name", "upstream_local",
        "route_name", "method", "log_path", "log_authority", "upstream_service_time",
        "cluster", "host", "route", "wc", "retry_state", "_discard", "_sent_at",
        "_timeout_handle", "_try_handle", "_deadline", "_per_try", "_paused_down",
        "done", "_read_paused", "_out", "_set_cookie", "_started", "_attempt_host", "_head", "_retry_status", "_snapshot", "req_headers",
        "upgrade", "_tunnel_up", "_tunnel_buf",
    )

    def __init__(self, conn: DownstreamConnection, req: Request, has_body: bool, keep_alive: bool) -> None:
        self.conn = conn
        self.req = req
        self.has_body = has_body
        self.keep_alive = keep_alive
        self.loop = conn.loop
        self.task: asyncio.Task | None = None
        self.body_complete = not has_body
        self.pending: list[bytes] = []  # body not yet written upstream
        self.pending_bytes = 0
        self.replay: list[bytes] = []  # body kept to replay on retry
        self.replay_ok = True
        self.chunked_up = False
        self.upstream: UpstreamConnection | None = None
        self.fut: asyncio.Future | None = None
        self.response_started = False
        self.resp_chunked = False
        self.resp_head_only = False
        self.status = 0
        self.flags: list[str] | None = None
        self.details: str | None = None
        self.transport_failure: str | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.t0 = self.loop.time()
        self.t_end = 0.0  # set when the stream finishes (records are written later)
        self.start_wall = time.time()
        self.upstream_host: str | None = None
        self.cluster_name: str | None = None
        self.upstream_local: str | None = None
        self.route_name: str | None = None
        self.method = req.method
        self.log_path = req.target
        self.log_authority = req.authority
        self.req_headers = req.headers
        self.upstream_service_time: int | None = None
        self.cluster: ClusterRuntime | None = None
        self.host: Any = None
        self.route: Any = None
        self.wc: Any = None
        self.retry_state: RetryState | None = None
        self._discard = False
        self._sent_at = 0.0
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._try_handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._per_try: float | None = None
        self._paused_down = False
        self._read_paused = False
        self._retry_status = 0
        self._snapshot: Any = None
        self._out: list[bytes] | None = None
        self._set_cookie: str | None = None
        self._started = False
        self._attempt_host: Any = None  # the host of the attempt in flight (counted as active)
        self._head = b""
        self.done = False
        self.upgrade: str | None = None  # "websocket" once the codec saw the upgrade request
        self._tunnel_up: UpstreamConnection | None = None  # set when the upstream said 101
        self._tunnel_buf: list[bytes] | None = None  # client bytes that came before the 101

    # ------------------------------------------------------------------ record helpers
    @property
    def protocol(self) -> str:
        return f"HTTP/{self.req.version}"

    def flags_str(self) -> str:
        return ",".join(self.flags) if self.flags else "-"

    def elapsed(self) -> float:
        """Seconds from the request's arrival to its end (or to now, while it runs)."""
        return (self.t_end or self.loop.time()) - self.t0

    def duration_ms(self) -> int:
        return int(self.elapsed() * 1000)

    @property
    def downstream_local(self) -> str:
        return self.conn.local_address

    @property
    def downstream_remote(self) -> str:
        return self.conn.remote_address

    def add_flag(self, flag: str) -> None:
        if self.flags is None:
            self.flags = [flag]
        elif flag not in self.flags:
            self.flags.append(flag)

    # ------------------------------------------------------------------ downstream events
    def start(self) -> None:
        """This stream now owns the connection's response side."""
        h = self.req.headers
        exp = h.get("expect")
        if exp is not None:
            del h["expect"]
            if exp.lower() == "100-continue" and not self.body_complete:
                # As Envoy does by default: answer 100 Continue ourselves, strip Expect.
                self.conn.write(CONTINUE_100)
        stats = self.conn.stats
        stats.downstream_rq_total += 1
        stats.downstream_rq_active += 1
        self._started = True
        try:
            self._begin()
        except Exception as e:
            self._internal_error(e)

    def on_request_body(self, data: bytes) -> None:
        n = len(data)
        self.bytes_received += n
        limit = self.conn.hcm.max_request_bytes
        if limit is not None and self.bytes_received > limit:
            self.conn.stats.downstream_rq_too_large += 1
            self.conn.error_reply(413, "request_payload_too_large")
            return
        if self.replay_ok:
            if self.bytes_received <= RETRY_BUFFER_LIMIT:
                self.replay.append(data)
            else:
                self.replay_ok = False
                self.replay = []
        up = self.upstream
        if up is not None and not self._discard:
            up.write(f"{n:x}\r\n".encode() + data + b"\r\n" if self.chunked_up else data)
        else:
            self.pending.append(data)
            self.pending_bytes += n
            if self.pending_bytes > PENDING_BODY_LIMIT and not self._read_paused:
                self._read_paused = True
                self.conn.pause_reading()

    def on_request_complete(self) -> None:
        self.body_complete = True
        up = self.upstream
        if up is not None and self.chunked_up and not self._discard:
            up.write(b"0\r\n\r\n")
        if self.upstream is not None:
            self._arm_timers()

    def on_downstream_reset(self) -> None:
        """The client went away (or the connection failed) before the response ended."""
        if self.done:
            return
        if self._tunnel_up is not None:
            self.tunnel_closed()  # the client ended the WebSocket session
            return
        self.add_flag(DC)
        self.details = self.details or "downstream_remote_disconnect"
        self._abandon_upstream()
        self._end_attempt()
        fut = self.fut
        task = self.task
        self.finish(keep_alive=False)
        if fut is not None and not fut.done():
            fut.set_result("downstream_reset")
        elif task is not None and not task.done():
            task.cancel()  # a back-off, a connect or a fault delay: nothing left to wait for

    def on_downstream_pause(self, paused: bool) -> None:
        up = self.upstream
        if up is None:
            return
        if paused and not self._paused_down:
            self._paused_down = True
            up.pause_reading()
        elif not paused and self._paused_down:
            self._paused_down = False
            up.resume_reading()

    def cancel(self) -> None:
        """A queued/parsing stream dropped because the connection is closing."""
        self.done = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # ------------------------------------------------------------------ the request path
    def _internal_error(self, e: Exception) -> None:
        """A bug must not take the proxy down: answer 500 (or cut the response) and log."""
        conn = self.conn
        conn.proxy.log_internal_error(self, e)
        self._abandon_upstream()
        self._end_attempt()
        if not self.response_started:
            self.reply(500, b"internal error", "internal_error")
        else:
            self.finish(keep_alive=False)
            conn.abort()

    def _begin(self) -> None:
        """Route the request and run the request filters, synchronously when nothing waits."""
        conn = self.conn
        snap = self._snapshot = conn.proxy.snapshot
        stats = conn.stats
        req = self.req
        table = snap.router.table(conn.chain.route_config)
        route = table.match(req) if table is not None else None
        if route is None:
            stats.no_route += 1
            self.add_flag(NR)
            self.reply(404, b"", "route_not_found")
            return
        self.route = route
        self.route_name = route.name
        filters = route.request_filters
        for i, f in enumerate(filters):
            r = f.on_request(req)
            if r is None:
                continue
            if isinstance(r, Delay):
                self.add_flag(DI)
                self.task = self.loop.create_task(self._delayed(route, i, r))
                return
            self.reply_local(r)
            return
        self._dispatch(route)

    async def _delayed(self, route: Any, index: int, delay: Delay) -> None:
        """A fault delay: sleep, then carry on with the remaining filters and the route."""
        try:
            req = self.req
            filters = route.request_filters
            while True:
                await asyncio.sleep(delay.seconds)
                if self.done:
                    return
                if delay.then is not None:
                    self.reply_local(delay.then)
                    return
                for index in range(index + 1, len(filters)):  # noqa: B020
                    r = filters[index].on_request(req)
                    if r is None:
                        continue
                    if isinstance(r, Delay):
                        self.add_flag(DI)
                        delay = r
                        break
                    self.reply_local(r)
                    return
                else:
                    break
            self._dispatch(route)
        except asyncio.CancelledError:
            self._abandon_upstream()
            raise
        except Exception as e:
            self._internal_error(e)

    def _dispatch(self, route: Any) -> None:
        """Answer locally, or pick the destination and make the first attempt: at once (no
        coroutine) when a pooled connection is idle, else in the attempt coroutine."""
        conn = self.conn
        stats = conn.stats
        req = self.req
        kind = route.kind
        if kind != "route":
            if kind == "redirect":
                stats.rq_redirect += 1
                self.reply_local(route.redirect_reply(req), "redirect")
            else:
                stats.rq_direct_response += 1
                self.reply_local(route.direct_reply(), "direct_response")
            return
        snap = self._snapshot
        wc = self.wc = route.single or route.pick(_random())
        cluster = snap.clusters.get(wc.cluster)
        self.cluster_name = wc.cluster
        if cluster is None:
            stats.no_cluster += 1
            self.add_flag("NC")
            self.reply(503, b"", "cluster_not_found")
            return
        self.cluster = cluster
        if route.has_rewrite:
            route.rewrite(req)
        self._prepare_request_headers(route, wc)
        if route.mirrors:
            self._mirror(route, snap)
        h = req.headers
        timeout = route.timeout
        override = h.pop("x-envoy-upstream-rq-timeout-ms", None)
        if override is not None and override.isdigit():
            timeout = int(override) / 1000.0 or None
        if route.retries is not None:
            retry = self.retry_state = RetryState(route.retries)
            self._per_try = retry.per_try_timeout
        if timeout:
            self._deadline = timeout
        if self.has_body and "content-length" not in h:
            self.chunked_up = True
        self._head = self._request_head()
        host = self._choose(cluster, None)
        if host is None:
            self.reply(503, BODY_UH, "no_healthy_upstream", UH)
            return
        if cluster.rq_active >= cluster.cb.max_requests:
            cluster.stats.upstream_rq_pending_overflow += 1
            self.reply(503, BODY_UO, "upstream_reset_before_response_started{overflow}", UO)
            return
        up = cluster.pool_for(host).take_idle()
        if up is None:
            self.task = self.loop.create_task(self._attempts(cluster, host, None))
            return
        self._begin_attempt(cluster, host)
        self._send(up)  # the upstream's callbacks finish the stream, or _signal() takes over

    def _choose(self, cluster: ClusterRuntime, prev: Any) -> Any:
        req = self.req
        if cluster.original_dst:
            host = cluster.original_dst_host(req.dest_ip, req.dest_port)
        else:
            key = None
            hp = cluster.hash_policy
            if hp is not None:
                key = cluster.lb.hash_key(req)
                if key is None and hp.cookie is not None and hp.cookie_ttl is not None:
                    # as Envoy: no affinity cookie yet, so make one and set it
                    key, self._set_cookie = new_cookie(hp, req)
            host = cluster.lb.choose(req, key, prev)
        if host is not None:
            self.host = host
            self.upstream_host = host.key
        return host

    def _begin_attempt(self, cluster: ClusterRuntime, host: Any) -> None:
        cluster.rq_active += 1
        host.active_requests += 1
        cluster.stats.upstream_rq_total += 1
        self._attempt_host = host

    def _end_attempt(self) -> None:
        host = self._attempt_host
        if host is not None:
            self._attempt_host = None
            self.cluster.rq_active -= 1  # type: ignore[union-attr]
            host.active_requests -= 1

    def _signal(self, outcome: str) -> None:
        """An attempt ended (``done``, ``retry``, ``reset``, ``timeout``...). The attempt
        coroutine, if one is waiting, takes it; an attempt made without one hands any
        outcome but success to a new attempt coroutine."""
        fut = self.fut
        if fut is not None:
            if not fut.done():
                fut.set_result(outcome)
            return
        if self._attempt_host is None:
            return
        if self._try_handle is not None:
            self._try_handle.cancel()
            self._try_handle = None
        self._end_attempt()
        if outcome == "done" or outcome == "downstream_reset" or self.done:
            return
        self.task = self.loop.create_task(self._attempts(self.cluster, self.host, outcome))  # type: ignore[arg-type]

    def _prepare_request_headers(self, route: Any, wc: Any) -> None:
        req = self.req
        h = req.headers
        hcm = self.conn.hcm
        upgrade = h.get("upgrade") if self.upgrade else None
        conn_hdr = h.get("connection")
        if conn_hdr:
            for tok in conn_hdr.split(","):
                tok = tok.strip().lower()
                if tok and tok not in ("close", "keep-alive"):
                    h.pop(tok, None)
        if not HOP_BY_HOP.isdisjoint(h):
            for name in HOP_BY_HOP.intersection(h):
                del h[name]
        if upgrade:  # a WebSocket upgrade asks the upstream to switch protocols too
            h["connection"] = "upgrade"
            h["upgrade"] = upgrade
        if hcm.use_remote_address:
            xff = h.get("x-forwarded-for")
            h["x-forwarded-for"] = f"{xff}, {req.source_ip}" if xff else req.source_ip
            h["x-forwarded-proto"] = req.scheme
        elif "x-forwarded-proto" not in h:
            h["x-forwarded-proto"] = req.scheme
        if "host" not in h:
            # HTTP/1.0 without Host: upstream requests are HTTP/1.1 and need one; use the
            # address the client connected to (Envoy would use default_host_for_http_10)
            req.set_authority(self.conn.local_address)
        if hcm.generate_request_id and "x-request-id" not in h:
            h["x-request-id"] = new_request_id()
        if wc.request_ops is not None:
            apply_request_ops(wc.request_ops, h, req)

    # ------------------------------------------------------------------ upstream attempts
    async def _attempts(self, cluster: ClusterRuntime, host: Any, outcome: str | None) -> None:
        try:
            await self._attempt_loop(cluster, host, outcome)
        except asyncio.CancelledError:
            self._abandon_upstream()
            self._end_attempt()
            raise
        except Exception as e:
            self._internal_error(e)
        finally:
            self._cancel_timers()
            if not self.done:
                self.finish(keep_alive=False)

    async def _attempt_loop(self, cluster: ClusterRuntime, host: Any, outcome: str | None) -> None:
        """Attempts until one succeeds or the policy gives up. ``outcome`` is that of an
        attempt already made on ``host``; None means ``host`` is chosen and not yet tried."""
        retry = self.retry_state
        st = cluster.stats
        cb = cluster.cb
        prev = None
        fresh = outcome is None
        while True:
            if outcome is None:
                if not fresh:
                    host = self._choose(cluster, prev)
                    if host is None:
                        self.reply(503, BODY_UH, "no_healthy_upstream", UH)
                        return
                    if cluster.rq_active >= cb.max_requests:
                        st.upstream_rq_pending_overflow += 1
                        self.reply(503, BODY_UO, "upstream_reset_before_response_started{overflow}", UO)
                        return
                fresh = False
                pool = cluster.pool_for(host)
                self._begin_attempt(cluster, host)
                try:
                    try:
                        up = pool.take_idle()
                        if up is None:
                            st.upstream_rq_pending_total += 1
                            up = await pool.acquire(cluster.connect_timeout)
                    except PoolOverflow:
                        st.upstream_rq_pending_overflow += 1
                        self.reply(503, BODY_UO, "upstream_reset_before_response_started{overflow}", UO)
                        return
                    except ConnectFailure as e:
                        self._end_attempt()
                        if cluster.outlier is not None:
                            cluster.outlier.record_local_failure(host)
                        self.transport_failure = e.reason
                        if retry is not None and retry.retry_on_connect_failure() and await self._backoff(cluster):
                            prev = host
                            continue
                        self.reply(503, BODY_UF, "upstream_reset_before_response_started{connection_failure}", UF)
                        return
                    if self.done:
                        pool.release(up)
                        return
                    outcome = await self._exchange(up)
                finally:
                    self._end_attempt()
            if outcome == "done" or outcome == "downstream_reset":
                return
            # the attempt failed before a response went to the client
            od = cluster.outlier
            if outcome == "retry":
                if await self._backoff(cluster):
                    prev, outcome = host, None
                    continue
                return  # _backoff already answered
            if outcome == "per_try_timeout":
                st.upstream_rq_per_try_timeout += 1
                if od is not None:
                    od.record_local_failure(host, timeout=True)
                if retry is not None and retry.retry_on_timeout() and await self._backoff(cluster):
                    prev, outcome = host, None
                    continue
                st.upstream_rq_timeout += 1
                self.reply(504, BODY_UT, "upstream_per_try_timeout", UT)
                return
            if outcome == "timeout":
                st.upstream_rq_timeout += 1
                self.reply(504, BODY_UT, "response_timeout", UT)
                return
            if outcome == "protocol_error":
                # the upstream did not speak HTTP/1.1 (Envoy: 502, flag UPE); not retried
                if od is not None:
                    od.record_response(host, 502)
                self.reply(502, BODY_UPE, "upstream_reset_before_response_started{protocol_error}", UPE)
                return
            # reset before the response started
            st.upstream_rq_rx_reset += 1
            if od is not None:
                od.record_local_failure(host)
            if retry is not None and retry.retry_on_reset() and await self._backoff(cluster):
                prev, outcome = host, None
                continue
            self.reply(503, BODY_UC, "upstream_reset_before_response_started{connection_termination}", UC)
            return

    async def _backoff(self, cluster: ClusterRuntime) -> bool:
        """Use one retry if the policy, the attempt count and the cluster budget allow."""
        rs = self.retry_state
        st = cluster.stats
        if rs is None or not self.replay_ok or (self.has_body and not self.body_complete and self.bytes_received > 0 and not self.replay):
            return self._retry_refused(False)
        if not rs.consume():
            st.upstream_rq_retry_limit_exceeded += 1
            return self._retry_refused(True)
        if cluster.retries_active >= cluster.cb.max_retries:
            st.upstream_rq_retry_overflow += 1
            return self._retry_refused(True)
        st.upstream_rq_retry += 1
        cluster.retries_active += 1
        try:
            await asyncio.sleep(rs.next_backoff())
        finally:
            cluster.retries_active -= 1
        if self.done:
            return False
        self._discard = False
        self.response_started = False
        return True

    def _retry_refused(self, exhausted: bool) -> bool:
        if self._retry_status:
            # a retriable upstream response whose retries are used up goes to the client
            # as it came, flagged URX; its body was discarded, so only the status remains.
            if exhausted:
                self.add_flag(URX)
            self.reply(self._retry_status, b"", "via_upstream")
            self.done = True
            return False
        if exhausted:
            self.add_flag(URX)
        return False

    def _request_head(self) -> bytes:
        req = self.req
        parts = [f"{req.method} {req.target} HTTP/1.1\r\n"]
        for n, v in req.headers.items():
            parts.append(f"{n}: {v}\r\n")
        if self.chunked_up:
            parts.append("transfer-encoding: chunked\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("latin-1")

    def _send(self, up: UpstreamConnection) -> None:
        """Write the request (head and the body received so far) on ``up``."""
        self.upstream = up
        self.upstream_local = up.local_address
        self._retry_status = 0
        self._sent_at = self.loop.time()
        up.start(self, self._head, self.req.method == "HEAD")
        chunked = self.chunked_up
        if self.replay and (self.replay_ok and self.pending is not self.replay):
            body = self.replay
        else:
            body = self.pending
        if body:
            for chunk in body:
                up.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
        self.pending = []
        self.pending_bytes = 0
        if self._read_paused:
            self._read_paused = False
            self.conn.resume_reading()
        if self.body_complete:
            if chunked:
                up.write(b"0\r\n\r\n")
            self._arm_timers()

    async def _exchange(self, up: UpstreamConnection) -> str:
        fut = self.fut = self.loop.create_future()
        self._send(up)
        try:
            return await fut
        finally:
            self.fut = None
            if self._try_handle is not None:
                self._try_handle.cancel()
                self._try_handle = None

    def _arm_timers(self) -> None:
        loop = self.loop
        if self._deadline:
            # the route timeout runs once, across every attempt and back-off
            self._timeout_handle = loop.call_later(self._deadline, self._on_timeout, "timeout")
            self._deadline = None
        if self._per_try and self._try_handle is None and not self.response_started:
            self._try_handle = loop.call_later(self._per_try, self._on_timeout, "per_try_timeout")

    def _on_timeout(self, which: str) -> None:
        if which == "timeout":
            self._timeout_handle = None
        else:
            self._try_handle = None
        if self.done:
            return
        if self.response_started:
            if which == "timeout":
                # too late for a 504: the client gets a truncated response
                self.add_flag(UT)
                self.details = "response_timeout"
                self._abandon_upstream()
                self.finish(keep_alive=False)
                self.conn.abort()
                self._signal("done")
            return
        self._abandon_upstream()
        if self.fut is not None or self._attempt_host is not None:
            self._signal(which)
        elif which == "timeout":
            # between attempts (backing off, or connecting for a retry): answer now; the
            # attempt loop sees the stream done when it wakes
            if self.cluster is not None:
                self.cluster.stats.upstream_rq_timeout += 1
            self.reply(504, BODY_UT, "response_timeout", UT)

    def _cancel_timers(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
            self._timeout_handle = None
        if self._try_handle is not None:
            self._try_handle.cancel()
            self._try_handle = None

    def _abandon_upstream(self) -> None:
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.abandon()

    # ------------------------------------------------------------------ upstream events
    def on_response_head(self, status: int, headers: list[tuple[str, str]], version: str) -> None:
        if self.done:
            return
        if status == 101:
            self._switching_protocols(headers)
            return
        cluster = self.cluster
        rs = self.retry_state
        if cluster.outlier is not None:  # type: ignore[union-attr]
            cluster.outlier.record_response(self.host, status)  # type: ignore[union-attr]
        if rs is not None and rs.retry_on_status(status):
            if rs.attempts_left <= 0 or not self.replay_ok or (
                cluster.retries_active >= cluster.cb.max_retries  # type: ignore[union-attr]
            ):
                # no retry is possible: this response goes to the client as it came
                if rs.attempts_left <= 0:
                    cluster.stats.upstream_rq_retry_limit_exceeded += 1  # type: ignore[union-attr]
                    self.add_flag(URX)
                elif self.replay_ok:  # the cluster's retry budget is spent
                    cluster.stats.upstream_rq_retry_overflow += 1  # type: ignore[union-attr]
                rs = None
        if rs is not None and rs.retry_on_status(status):
            # swallow this response; the attempt loop will retry
            self._retry_status = status
            self._discard = True
            self.status = status
            up = self.upstream
            self.upstream = None
            if up is not None:
                up.abandon()
            cluster.stats.record_status(status)  # type: ignore[union-attr]
            self._signal("retry")
            return
        if self._try_handle is not None:
            self._try_handle.cancel()
            self._try_handle = None
        cluster.stats.record_status(status)  # type: ignore[union-attr]
        self.upstream_service_time = int((self.loop.time() - self._sent_at) * 1000)
        self.status = status
        self.details = "via_upstream"
        conn = self.conn
        req = self.req
        route = self.route
        out: list[tuple[str, str]] = []
        length = None
        named: set[str] | None = None  # headers the upstream's Connection header names
        for n, v in headers:
            if n in HOP_BY_HOP or n == "server":
                if n == "connection":
                    named = {t.strip().lower() for t in v.split(",")}
                continue
            if n == "content-length":
                if status == 204 or status < 200:
                    continue  # RFC 9110 8.6: never on a 1xx or 204
                length = v
            out.append((n, v))
        if named and not named <= _DROPPED_ANYWAY:  # "keep-alive", "close": nothing more to drop
            out = [(n, v) for n, v in out if n not in named]
        out.append(("x-envoy-upstream-service-time", str(self.upstream_service_time)))
        if self._set_cookie is not None:
            out.append(("set-cookie", self._set_cookie))
        out.append(("server", conn.hcm.server_name))
        wc = self.wc
        if wc is not None and wc.response_ops is not None:
            apply_response_ops(wc.response_ops, out)
        for f in route.response_filters:
            f.on_response(req, status, out)
        no_body = req.method == "HEAD" or status in (204, 304) or status < 200
        self.resp_head_only = no_body
        # a request body still arriving cannot be skipped safely: the connection closes after
        # this response (on_response_done), so say so
        keep = self.keep_alive and not conn.closing and self.body_complete
        if not no_body and length is None:
            if req.version == "1.1":
                self.resp_chunked = True
                out.append(("transfer-encoding", "chunked"))
            else:
                keep = False  # HTTP/1.0 client: the body ends with the connection
        if not keep:
            self.keep_alive = False
            out.append(("connection", "close"))
        elif req.version == "1.0":
            out.append(("connection", "keep-alive"))
        data = _response_head(status, out)
        self.response_started = True
        # held back until the upstream read that carried it is fully parsed, so that a head
        # and a small body leave in one write (one syscall) — see flush()
        self._out = [data]

    # ------------------------------------------------------------------ WebSocket tunnel
    def _switching_protocols(self, headers: list[tuple[str, str]]) -> None:
        """The upstream accepted the upgrade: relay its 101 (with Upgrade and Connection;
        other hop-by-hop headers dropped) at once; the upstream then hands the connection
        over (``tunnel_established``)."""
        self._cancel_timers()  # the route timeout ends with the handshake, as in Envoy
        cluster = self.cluster
        cluster.stats.record_status(101)  # type: ignore[union-attr]
        self.upstream_service_time = int((self.loop.time() - self._sent_at) * 1000)
        self.status = 101
        self.details = "via_upstream"
        out = [(n, v) for n, v in headers if (n not in HOP_BY_HOP and n != "server") or n == "upgrade"]
        out.append(("connection", "upgrade"))
        out.append(("x-envoy-upstream-service-time", str(self.upstream_service_time)))
        out.append(("server", self.conn.hcm.server_name))
        self.response_started = True
        self.conn.write(_response_head(101, out))

    def tunnel_established(self, up: UpstreamConnection, rest: bytes) -> None:
        """The upstream connection now carries the WebSocket session: pass bytes both ways."""
        if self.done:  # the client left during the handshake
            up.close()
            return
        self._tunnel_up = up
        if rest:
            self.tunnel_out(rest)
        buf, self._tunnel_buf = self._tunnel_buf, None
        for chunk in buf or ():
            self.tunnel_in(chunk)

    def tunnel_in(self, data: bytes) -> None:
        """Bytes from the client after the upgrade request."""
        up = self._tunnel_up
        if up is not None:
            self.bytes_received += len(data)
            up.write(data)
            return
        buf = self._tunnel_buf
        if buf is None:
            buf = self._tunnel_buf = []
        buf.append(data)
        if sum(map(len, buf)) > PENDING_BODY_LIMIT and not self._read_paused:
            self._read_paused = True  # a client that does not wait for the 101
            self.conn.pause_reading()

    def tunnel_out(self, data: bytes) -> None:
        """Bytes from the upstream after its 101."""
        self.bytes_sent += len(data)
        conn = self.conn
        conn._last_activity = self.loop.time()
        conn.write(data)
        if conn.write_paused:
            self.on_downstream_pause(True)

    def tunnel_closed(self) -> None:
        """Either side ended the session: end the other, log the request (101)."""
        up, self._tunnel_up = self._tunnel_up, None
        self.upstream = None
        if up is not None:
            up.close()
        self._end_attempt()
        self.finish(keep_alive=False)
        self.conn.close()
        self._signal("done")  # an attempt coroutine waiting on this exchange ends

    def on_response_body(self, data: bytes) -> None:
        if self._discard or self.done or self.resp_head_only:
            return
        self.bytes_sent += len(data)
        if self.resp_chunked:
            data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        out = self._out
        if out is not None:
            out.append(data)
            if len(data) > 65536:
                self.flush()
        else:
            self.conn.write(data)
            if self.conn.write_paused:
                self.on_downstream_pause(True)

    def flush(self) -> None:
        """Write what the last upstream read produced for the client."""
        out = self._out
        if out is not None:
            self._out = None
            conn = self.conn
            conn._last_activity = self.loop.time()
            conn.write(out[0] if len(out) == 1 else b"".join(out))
            if conn.write_paused:
                self.on_downstream_pause(True)

    def on_response_done(self, reusable: bool) -> None:
        self.upstream = None
        if self._discard or self.done:
            return
        if self.resp_chunked:
            if self._out is not None:
                self._out.append(b"0\r\n\r\n")
            else:
                self.conn.write(b"0\r\n\r\n")
        if self.retry_state is not None and self.retry_state.retried:
            self.cluster.stats.upstream_rq_retry_success += 1  # type: ignore[union-attr]
        self.cluster.stats.upstream_rq_completed += 1  # type: ignore[union-attr]
        if not self.body_complete:
            # the upstream answered before the request body ended (e.g. an early 413):
            # the rest of the request cannot be skipped safely, so the connection closes
            self.keep_alive = False
        self.finish(self.keep_alive)
        self._signal("done")

    def on_upstream_error(self, kind: str) -> None:
        self.upstream = None
        if self._discard or self.done:
            return
        if self.response_started:
            # the response was cut off mid-body: the client's response is cut off too
            self.add_flag(UC)
            self.details = "upstream_reset_after_response_started{connection_termination}"
            self.cluster.stats.upstream_rq_rx_reset += 1  # type: ignore[union-attr]
            self.finish(keep_alive=False)
            self.conn.abort()
            self._signal("done")
            return
        self._signal("protocol_error" if kind == "protocol" else "reset")

    def on_upstream_pause(self, paused: bool) -> None:
        # the upstream is not reading our request body fast enough: stop reading the client
        if paused and not self._read_paused:
            self._read_paused = True
            self.conn.pause_reading()
        elif not paused and self._read_paused:
            self._read_paused = False
            self.conn.resume_reading()

    # ------------------------------------------------------------------ answers
    def reply_local(self, r: LocalReply, details: str | None = None) -> None:
        if r.flag:
            self.add_flag(r.flag)
        self.reply(r.status, r.body, r.details or details or "local_reply", None, r.headers)

    def reply(self, status: int, body: str | bytes, details: str, flag: str | None = None,
              headers: list[tuple[str, str]] | None = None) -> None:
        """Answer from the proxy itself."""
        if self.done:
            return
        if flag:
            self.add_flag(flag)
        self.status = status
        self.details = details
        conn = self.conn
        if self.response_started:
            self.finish(keep_alive=False)
            conn.abort()
            return
        # a request whose body was not read cannot leave the connection reusable
        keep = self.keep_alive and not conn.closing and self.body_complete
        b = body.encode() if isinstance(body, str) else body
        hdrs = list(headers) if headers else []
        route = self.route
        if route is not None:
            for f in route.response_filters:
                f.on_response(self.req, status, hdrs)
        data = local_reply_bytes(status, b, not keep, hdrs, self.req.method == "HEAD", conn.hcm.server_name)
        self.response_started = True
        self.bytes_sent = len(b)
        conn.write(data)
        self.finish(keep)

    def fail_local(self, status: int, details: str) -> None:
        """A protocol error on the connection while this stream was active."""
        self.keep_alive = False
        if self.response_started:
            self.finish(False)
            self.conn.abort()
            return
        self._abandon_upstream()
        self._end_attempt()
        fut = self.fut
        self.reply(status, REASONS.get(status, "Error"), details)
        if fut is not None and not fut.done():
            fut.set_result("done")
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def finish(self, keep_alive: bool) -> None:
        if self.done:
            return
        if self._out is not None:
            self.flush()
        self.done = True
        self._cancel_timers()
        conn = self.conn
        st = conn.stats
        if self._started:
            st.downstream_rq_active -= 1
        st.downstream_rq_completed += 1
        if self.status:
            st.record_status(self.status)
        self.t_end = self.loop.time()
        conn.proxy.record(self)
        conn.stream_done(self, keep_alive and self.keep_alive)

    # ------------------------------------------------------------------ mirroring
    def _mirror(self, route: Any, snap: Any) -> None:
        for cluster_name, fraction in route.mirrors:
            if fraction < 1.0 and _random() >= fraction:
                continue
            cluster = snap.clusters.get(cluster_name)
            if cluster is None:
                continue
            if self.has_body and not self.body_complete:
                continue  # only complete, small bodies are mirrored
            req = self.req
            host = req.authority
            colon = host.rfind(":")
            shadow = f"{host[:colon]}-shadow{host[colon:]}" if colon > 0 and "]" not in host[colon:] else f"{host}-shadow"
            lines = [f"{req.method} {req.target} HTTP/1.1\r\n"]
            body = b"".join(self.pending) if self.has_body else b""
            for n, v in req.headers.items():
                if n == "host":
                    v = shadow
                elif n in ("content-length", "transfer-encoding"):
                    continue
                lines.append(f"{n}: {v}\r\n")
            if self.has_body:
                lines.append(f"content-length: {len(body)}\r\n")
            lines.append("\r\n")
            data = "".join(lines).encode("latin-1") + body
            self.loop.create_task(_send_mirror(cluster, req, data, req.method == "HEAD"))


class _MirrorSink:
    """Reads and drops the response of a mirrored request."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future) -> None:
        self.fut = fut

    def on_response_head(self, status: int, headers: Any, version: str) -> None:
        pass

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_done(self, reusable: bool) -> None:
        if not self.fut.done():
            self.fut.set_result(True)

    def on_upstream_error(self, kind: str) -> None:
        if not self.fut.done():
            self.fut.set_result(False)

    def on_upstream_pause(self, paused: bool) -> None:
        pass

    def flush(self) -> None:
        pass


async def _send_mirror(cluster: ClusterRuntime, req: Request, data: bytes, head_only: bool) -> None:
    host = cluster.lb.choose(req, None, None)
    if host is None:
        return
    pool = cluster.pool_for(host)
    cluster.stats.upstream_rq_total += 1
    try:
        up = await pool.acquire(cluster.connect_timeout)
    except (PoolOverflow, ConnectFailure):
        return
    fut = asyncio.get_running_loop().create_future()
    up.start(_MirrorSink(fut), data, head_only)
    try:
        await asyncio.wait_for(fut, 30)
    except TimeoutError:
        up.abandon()
