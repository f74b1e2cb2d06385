"""Upstream HTTP/1.1 connections and their per-host pool.

An :class:`UpstreamConnection` carries one exchange at a time (no pipelining upstream, as
Envoy). The response is parsed with httptools and handed to the exchange's callbacks, which
stream it to the downstream connection without queues. Idle connections return to the
:class:`HostPool` of their host; the pool honours ``max_requests_per_connection`` and
``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import httptools

from pilotfish.proxy.http import _NAMES, after_upgrade, header_name

if TYPE_CHECKING:
    from pilotfish.proxy.lb import Host


class ResponseSink(Protocol):
    """What an upstream connection reports to (the stream being served). A sink may also
    have ``body_complete``: False when the response ends before the whole request body
    was sent, so that the connection is closed rather than pooled."""

    def on_response_head(self, status: int, headers: list[tuple[str, str]], version: str) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_done(self, reusable: bool) -> None: ...
    def on_upstream_error(self, kind: str) -> None: ...  # "reset" | "protocol"
    def on_upstream_pause(self, paused: bool) -> None: ...  # upstream write buffer full/drained
    def flush(self) -> None: ...  # the end of one upstream read: write what it produced


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "pool",
        "transport",
        "parser",
        "sink",
        "requests",
        "closed",
        "_status",
        "_headers",
        "_head_only",
        "idle_since",
        "tunnel",
        "_paused",
        "local_address",
        "_done",
    )

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.requests = 0
        self.closed = False
        self._headers: list[tuple[str, str]] = []
        self._status = 0
        self._head_only = False
        self.idle_since = 0.0  # loop time it was last released to the pool
        self.tunnel: Any = None  # the stream of a WebSocket session (after a 101): bytes pass raw
        self._paused = False
        self._done = True
        self.local_address = ""

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        local = transport.get_extra_info("sockname")
        if local:
            self.local_address = f"{local[0]}:{local[1]}"

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.tunnel_out(data)
            return
        if self.sink is None:
            # bytes from an idle upstream: it is not speaking HTTP/1.1 as we expect
            self.close()
            return
        try:
            self.parser.feed_data(data)
            sink = self.sink
            if sink is not None:
                sink.flush()
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            if isinstance(e, httptools.HttpParserUpgrade) and self._upgrading():
                # the 101 the request asked for: from now on this connection belongs to the
                # WebSocket session (never pooled again)
                self.sink, self.tunnel = None, self.sink
                self.tunnel.tunnel_established(self, after_upgrade(e, data))
                return
            # a malformed response, or a 101 nobody asked for: a protocol error
            sink, self.sink = self.sink, None
            self.close()
            if sink is not None:
                sink.on_upstream_error("protocol")

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            tunnel.tunnel_closed()  # the upstream ended the WebSocket session
            return
        sink, self.sink = self.sink, None
        if sink is not None:
            if not self._done and self._status and self._read_until_close():
                # a response delimited by the connection close is complete now
                self._done = True
                sink.on_response_done(False)
            else:
                sink.on_upstream_error("reset")

    def pause_writing(self) -> None:
        self._paused = True
        sink = self.sink or self.tunnel
        if sink is not None:
            sink.on_upstream_pause(True)

    def resume_writing(self) -> None:
        self._paused = False
        sink = self.sink or self.tunnel
        if sink is not None:
            sink.on_upstream_pause(False)

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._status = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        n = _NAMES.get(name)
        if n is None:
            n = header_name(name)
        v = value.decode("latin-1")
        if n == "transfer-encoding" and v.strip().lower() != "chunked":
            # llhttp would read such a body until close and we would drop the coding with
            # the hop-by-hop header, corrupting the body: a protocol error, as in Envoy
            raise ValueError("unsupported transfer-encoding in response")
        self._headers.append((n, v))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._status = status
        if status < 200:
            if status == 101 and self._upgrading():
                self.sink.on_response_head(101, self._headers, self.parser.get_http_version())  # type: ignore[union-attr]
            return  # other 1xx: swallowed (we answer 100-continue ourselves)
        sink = self.sink
        if sink is not None:
            sink.on_response_head(status, self._headers, self.parser.get_http_version())
        if self._head_only and status >= 200:
            # A response to HEAD has no body whatever its headers say; httptools cannot be
            # told so, so finish the message here and start a fresh parser (once the
            # version is read: a fresh parser knows none).
            keep_alive = self._keep_alive_from_headers()
            self.parser = httptools.HttpResponseParser(self)
            self._finish(keep_alive)

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._status < 200 or self._head_only:
            return
        self._finish(self.parser.should_keep_alive())

    # -- helpers
    def _upgrading(self) -> bool:
        """The response is a 101 and the exchange asked for a WebSocket upgrade."""
        return self._status == 101 and self.sink is not None and bool(getattr(self.sink, "upgrade", None))

    def _keep_alive_from_headers(self) -> bool:
        for n, v in self._headers:
            if n == "connection" and "close" in v.lower():
                return False
        return self.parser.get_http_version() == "1.1"

    def _read_until_close(self) -> bool:
        for n, _ in self._headers:
            if n in ("content-length", "transfer-encoding"):
                return False
        return True

    def _finish(self, keep_alive: bool) -> None:
        self._done = True
        sink, self.sink = self.sink, None
        # An upstream that answered before the whole request body was sent (an early 413)
        # still expects the rest of it: reusing the connection would desync it.
        reusable = keep_alive and not self.closed and getattr(sink, "body_complete", True)
        if sink is not None:
            sink.on_response_done(reusable)
        if reusable:
            self.pool.release(self)
        else:
            self.close()

    def start(self, sink: ResponseSink, head: bytes, head_only: bool) -> None:
        """Begin an exchange: send the request head (the body follows through write())."""
        self.sink = sink
        self._head_only = head_only
        self._done = False
        self._status = 0
        self.requests += 1
        self.transport.write(head)  # type: ignore[union-attr]
        if self._paused:
            sink.on_upstream_pause(True)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def abandon(self) -> None:
        """The exchange is given up (timeout, downstream gone): the connection cannot be reused."""
        self.sink = None
        self.close()

    def pause_reading(self) -> None:
        if not self.closed:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


class PoolOverflow(Exception):
    """The cluster's circuit breaker refused (max_connections / max_pending_requests)."""


class ConnectFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HostPool:
    """Connections to one upstream host. Limits are shared per cluster (``limits``)."""

    __slots__ = ("host", "limits", "idle", "active", "loop", "draining", "_sweep", "__weakref__")

    def __init__(self, host: Host, limits: Any) -> None:
        self.host = host
        self.limits = limits  # the ClusterRuntime: counters and circuit-breaker settings
        # released connections, oldest first (take_idle takes the newest: it is warm)
        self.idle: deque[UpstreamConnection] = deque()
        self.active: set[UpstreamConnection] = set()
        self.loop = asyncio.get_event_loop()
        self.draining = False
        # one timer per pool closes connections idle for idle_timeout (not one per request)
        self._sweep: asyncio.TimerHandle | None = None

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()  # most recently used first: warm, least likely to be timed out
            if not conn.closed:
                return conn
        return None

    async def acquire(self, connect_timeout: float) -> UpstreamConnection:
        """An idle connection to this host, or a new one within the cluster's
        ``max_connections``; at the limit, wait (as a pending request, within
        ``max_pending_requests``) for a connection to be released anywhere in the cluster."""
        lim = self.limits
        pending = False
        try:
            while True:
                conn = self.take_idle()
                if conn is not None:
                    return conn
                if lim.cx_active < lim.cb.max_connections:
                    return await self._connect(connect_timeout)
                # at the limit: an idle connection to another host can make room
                if lim.close_one_idle():
                    continue
                if not pending:
                    if lim.rq_pending_active >= lim.cb.max_pending_requests:
                        raise PoolOverflow()
                    pending = True
                    lim.rq_pending_active += 1
                fut = self.loop.create_future()
                lim.waiters.append(fut)
                await fut
        finally:
            if pending:
                lim.rq_pending_active -= 1

    async def _connect(self, timeout: float) -> UpstreamConnection:
        lim = self.limits
        lim.cx_active += 1
        lim.stats.upstream_cx_total += 1
        conn = UpstreamConnection(self)
        self.active.add(conn)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, self.host.address, self.host.port),
                timeout,
            )
        except TimeoutError:
            self._gone(conn)
            lim.stats.upstream_cx_connect_timeout += 1
            lim.stats.upstream_cx_connect_fail += 1
            raise ConnectFailure("connection timeout") from None
        except OSError as e:
            self._gone(conn)
            lim.stats.upstream_cx_connect_fail += 1
            raise ConnectFailure(e.strerror or type(e).__name__) from None
        return conn

    def _gone(self, conn: UpstreamConnection) -> None:
        if conn in self.active:
            self.active.discard(conn)
            self.limits.cx_active -= 1
            self.limits.wake()

    def release(self, conn: UpstreamConnection) -> None:
        lim = self.limits
        mr = lim.cb.max_requests_per_connection
        if self.draining or (mr and conn.requests >= mr):
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        it = lim.cb.idle_timeout
        if it and self._sweep is None:
            self._sweep = self.loop.call_at(conn.idle_since + it, self._close_expired)
        lim.wake()

    def _close_expired(self) -> None:
        """Close the connections idle for ``idle_timeout``; look again when the next expires."""
        self._sweep = None
        it = self.limits.cb.idle_timeout
        idle = self.idle
        if not it:
            return
        now = self.loop.time()
        while idle and idle[0].idle_since + it <= now:
            idle.popleft().close()
        if idle:
            self._sweep = self.loop.call_at(idle[0].idle_since + it, self._close_expired)

    def forget(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self._gone(conn)

    def close_all(self) -> None:
        self.draining = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self.idle):
            conn.close()
