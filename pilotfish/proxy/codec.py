"""The downstream HTTP/1.1 connection: strict parsing, limits, and response framing.

httptools (llhttp) parses; this module adds the rules a proxy must enforce before anything
reaches a filter: request smuggling shapes are refused with 400 and the connection closed
(llhttp already refuses Content-Length with Transfer-Encoding, duplicate or invalid
Content-Length, obs-fold, bad chunk sizes and bare LF), a Transfer-Encoding whose last
coding is not ``chunked`` gets 400 (RFC 9112 6.3) and one with another coding before
``chunked`` 501, an oversized request line or header block 431, a body over the configured
limit 413, a client too slow to send its headers 408, an unsupported version 505.

Each parsed request becomes a :class:`~pilotfish.proxy.stream.Stream`. Requests pipelined
on one connection are served one after another; the body of the first one streams, the
bodies of those queued behind it are buffered (reading pauses when the queue grows). An
error in a pipelined request is answered after the complete requests before it, then the
connection closes; nothing after a refused request is served.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from pilotfish.proxy.http import _NAMES, REASONS, Request, after_upgrade, header_name
from pilotfish.proxy.stream import Stream, local_reply_bytes

if TYPE_CHECKING:
    from pilotfish.proxy.listener import ChainRuntime

MAX_QUEUED_BYTES = 256 * 1024
# RFC 9112 3.2: Host = uri-host [ ":" port ] (reg-name or IP-literal; no userinfo)
_HOST_RE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Za-z:.%\-_~]+\])(?::[0-9]*)?")


class BadRequest(Exception):
    def __init__(self, status: int, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.details = details


class DownstreamConnection(asyncio.Protocol):
    """One client connection on an HTTP filter chain."""

    def __init__(self, chain: ChainRuntime, listener: Any) -> None:
        self.chain = chain
        self.listener = listener
        self.proxy = listener.proxy
        self.hcm = chain.hcm
        self.stats = chain.stats
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.loop = asyncio.get_event_loop()
        self.closed = False
        self.closing = False  # no new requests: close when the current one ends
        self.source_ip = ""
        self.source_port = 0
        self.dest_ip = ""
        self.dest_port = 0
        self.local_address = ""
        self.remote_address = ""
        self.active: Stream | None = None  # the stream being served (owns the response)
        self.parsing: Stream | None = None  # the stream whose request is being parsed
        self.queue: deque[Stream] = deque()
        self.queued_bytes = 0
        self.write_paused = False
        self._read_pause = 0  # reasons to keep reading paused
        self._queue_paused = False  # one of them: the body of a queued request grew too large
        self.tunnel: Stream | None = None  # a WebSocket stream: bytes now pass through it raw
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._in_head = False
        self._head_started = 0.0
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._max_head = self.hcm.max_request_headers_kb * 1024
        self._bad_header: str | None = None
        self._head_size = 0  # bytes of the header fields parsed so far (names, values, ": ", CRLF)
        self._began = False  # a request began during the read being parsed
        self._valid_host: str | None = None  # the last Host value that passed the syntax check
        self._nheaders = 0
        self._deferred: tuple[int, str] | None = None  # error to answer after the active stream

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername") or ("", 0)
        self.source_ip, self.source_port = peer[0], peer[1]
        self.remote_address = f"{peer[0]}:{peer[1]}"
        self.dest_ip, self.dest_port = self.listener.destination_of(transport)
        self.local_address = f"{self.dest_ip}:{self.dest_port}"
        self.stats.downstream_cx_total += 1
        self.stats.downstream_cx_active += 1
        self.listener.connections.add(self)
        self._last_activity = self.loop.time()
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.stats.downstream_cx_active -= 1
        self.listener.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for s in (self.active, self.parsing, *self.queue):
            if s is not None:
                s.on_downstream_reset()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.active is not None:
            self.active.on_downstream_pause(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.active is not None:
            self.active.on_downstream_pause(False)

    def pause_reading(self) -> None:
        self._read_pause += 1
        if self._read_pause == 1 and not self.closed:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self._read_pause > 0:
            self._read_pause -= 1
            if self._read_pause == 0 and not self.closed:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ timeouts
    def _arm_timer(self) -> None:
        hcm = self.hcm
        t = min(x for x in (hcm.idle_timeout, hcm.request_headers_timeout, hcm.stream_idle_timeout, 3600.0) if x)
        self._timer = self.loop.call_later(t, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.loop.time()
        hcm = self.hcm
        if self._in_head and hcm.request_headers_timeout and now - self._head_started >= hcm.request_headers_timeout:
            self.stats.downstream_rq_header_timeout += 1
            self.error_reply(408, "request_header_timeout")
            return
        idle = self.active is None and self.parsing is None and not self._in_head
        quiet = now - self._last_activity
        if idle and hcm.idle_timeout and quiet >= hcm.idle_timeout:
            self.stats.downstream_cx_idle_timeout += 1
            self.close()
            return
        if not idle and hcm.stream_idle_timeout and quiet >= hcm.stream_idle_timeout:
            # no bytes either way on the stream for this long (Envoy's stream_idle_timeout)
            self.stats.downstream_rq_idle_timeout += 1
            self.error_reply(408, "stream_idle_timeout")
            return
        self._arm_timer()

    # ------------------------------------------------------------------ parsing
    def data_received(self, data: bytes) -> None:
        self._last_activity = self.loop.time()
        self.stats.downstream_cx_rx_bytes_total += len(data)
        if self.tunnel is not None:
            self.tunnel.tunnel_in(data)
            return
        try:
            self._began = False
            self.parser.feed_data(data)
            if self._in_head:
                if self._began:
                    # the head began inside this read, perhaps after the end of the previous
                    # request: count what is parsed of it (the request line and the complete
                    # header lines; a partial line is counted with the next read)
                    self._head_bytes = sum(map(len, self._url)) + self._head_size
                else:
                    self._head_bytes += len(data)  # all of it belongs to the unfinished head
                if self._head_bytes > self._max_head:
                    raise BadRequest(431, "request_headers_too_large")
        except httptools.HttpParserUpgrade as e:
            self._on_upgrade(data, e)
        except BadRequest as e:
            self.error_reply(e.status, e.details)
        except httptools.HttpParserCallbackError as e:
            # httptools reports an exception raised in a callback (our BadRequest from
            # on_headers_complete) as a callback error, with the original as its context
            ctx = e.__context__
            if isinstance(ctx, BadRequest):
                self.error_reply(ctx.status, ctx.details)
            else:
                self.stats.downstream_cx_protocol_error += 1
                self.error_reply(400, "http1.codec_error")
        except httptools.HttpParserError as e:
            self.stats.downstream_cx_protocol_error += 1
            self.error_reply(400, "http1.codec_error" if not str(e) else f"http1.codec_error{{{_slug(e)}}}")

    def eof_received(self) -> bool | None:
        # A half-closed client: finish the response in flight, then close. A request cut
        # off by the EOF (head or body incomplete) can never complete: the client is gone
        # (DC), so close now rather than wait for bytes that cannot come.
        self.closing = True
        if self.tunnel is not None or self.active is None or self.parsing is not None or self._in_head:
            return None  # (a tunnel ends when either side ends)
        return True

    def on_message_begin(self) -> None:
        self._url = []
        self._headers = {}
        self._nheaders = 0
        self._head_size = 0
        self._began = True
        self._bad_header = None
        self._in_head = True
        self._head_bytes = 0
        self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        n = _NAMES.get(name)
        if n is None:
            n = header_name(name)
        v = value.decode("latin-1")
        self._nheaders += 1
        self._head_size += len(n) + len(v) + 4
        h = self._headers
        if n in h:
            if n == "host":
                self._bad_header = "duplicate host header"
            elif n == "transfer-encoding":
                self._bad_header = "duplicate transfer-encoding header"
            h[n] = f"{h[n]}, {v}"
        else:
            h[n] = v

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.closing or self._deferred is not None:
            return  # bytes after a refused request (or a close) are never served
        parser = self.parser
        url = b"".join(self._url)
        if len(url) + self._head_size > self._max_head or self._nheaders > self.hcm.max_headers_count:
            raise BadRequest(431, "request_headers_too_large")
        if self._bad_header:
            raise BadRequest(400, self._bad_header.replace(" ", "_"))
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise BadRequest(505, "http1.codec_error{HPE_INVALID_VERSION}")
        headers = self._headers
        te = headers.get("transfer-encoding")
        if te is not None and te.strip().lower() != "chunked":
            if te.rpartition(",")[2].strip().lower() != "chunked":
                # chunked is not the final coding: the body length cannot be determined
                raise BadRequest(400, "http1.invalid_transfer_encoding")
            raise BadRequest(501, "http1.invalid_transfer_encoding")
        if version == "1.1" and "host" not in headers:
            raise BadRequest(400, "http1.missing_host_header")
        method = parser.get_method().decode("latin-1")
        if method == "CONNECT":
            raise BadRequest(501, "http1.connect_not_supported")
        try:
            target = url.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest(400, "http1.invalid_url") from None
        if not target.startswith("/"):
            target = self._absolute_form(target, headers, method)
        host = headers.get("host")
        if host is not None and host != self._valid_host:
            if _HOST_RE.fullmatch(host) is None:
                raise BadRequest(400, "http.invalid_authority")
            self._valid_host = host  # keep-alive clients send the same Host again and again
        hcm = self.hcm
        length = headers.get("content-length")
        clen = int(length) if length is not None else None
        if hcm.max_request_bytes is not None and clen is not None and clen > hcm.max_request_bytes:
            self.stats.downstream_rq_too_large += 1
            raise BadRequest(413, "request_payload_too_large")
        req = Request(
            method, target, headers, version, "http",
            self.source_ip, self.source_port, self.dest_ip, self.dest_port,
        )
        has_body = te is not None or (clen is not None and clen > 0)
        stream = Stream(self, req, has_body, parser.should_keep_alive())
        self.parsing = stream
        if self.active is None:
            self.active = stream
            if parser.should_upgrade():
                # httptools signals the upgrade after this callback returns: decide then
                self.loop.call_soon(self._start_if_active, stream)
            else:
                stream.start()
        else:
            self.queue.append(stream)

    def _start_if_active(self, stream: Stream) -> None:
        if self.active is stream and not stream.done and not self.closed:
            stream.start()

    def _absolute_form(self, target: str, headers: dict[str, str], method: str) -> str:
        """``GET http://host/path``: the authority comes from the target (RFC 9112 3.2.2)."""
        if target == "*":
            if method != "OPTIONS":  # the asterisk form is for OPTIONS only (RFC 9112 3.2.4)
                raise BadRequest(400, "http1.invalid_url")
            return target
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise BadRequest(400, "http1.invalid_url")
        slash = rest.find("/")
        authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        headers["host"] = authority
        return path

    def on_body(self, body: bytes) -> None:
        s = self.parsing
        if s is None:
            return
        if s is not self.active:
            self.queued_bytes += len(body)
            if self.queued_bytes > MAX_QUEUED_BYTES and not self._queue_paused:
                self._queue_paused = True  # one reason to pause, however many chunks follow
                self.pause_reading()
        s.on_request_body(body)

    def on_message_complete(self) -> None:
        s = self.parsing
        self.parsing = None
        if s is not None:
            s.on_request_complete()

    def _on_upgrade(self, data: bytes, e: httptools.HttpParserUpgrade) -> None:
        # llhttp completes the message (on_message_complete) before it pauses for the
        # upgrade, so the upgrading stream is the newest one, no longer 'parsing'
        s = self.parsing or (self.queue[-1] if self.queue else self.active)
        upgrade = (s.req.headers.get("upgrade", "") if s else "").lower()
        if s is not None and upgrade == "h2c" and not s.has_body:
            # curl --http2 over cleartext asks to upgrade; answer in HTTP/1.1, as Envoy does
            # when h2c upgrade is not configured.
            s.req.headers.pop("upgrade", None)
            s.req.headers.pop("http2-settings", None)
            if self.parsing is s:
                self.parsing = None
                s.on_request_complete()
            self.parser = httptools.HttpRequestParser(self)
            rest = after_upgrade(e, data)
            if rest:
                self.data_received(rest)
            return
        if (s is not None and upgrade == "websocket" and s.method == "GET" and not s.has_body
                and "upgrade" in s.req.headers.get("connection", "").lower()):
            # Istio enables WebSocket upgrades: the request goes upstream with its Upgrade
            # header, and once the upstream answers 101 bytes pass through both ways
            # (Stream.tunnel_*). The parser is done with this connection.
            if self.parsing is s:
                self.parsing = None
                s.on_request_complete()
            s.upgrade = upgrade
            s.keep_alive = False
            self.tunnel = s
            rest = after_upgrade(e, data)
            if rest:
                s.tunnel_in(rest)
            return
        # Other upgrades are refused, as Envoy does when the upgrade type is not configured.
        if s is not None:
            self.parsing = s  # the request in error (answered 403 once those before it are)
        self.error_reply(403, "upgrade_failed")

    # ------------------------------------------------------------------ responses
    def error_reply(self, status: int, details: str) -> None:
        """A protocol-level error: answer (if no response has started) and close."""
        if self._deferred is not None:
            return
        s = self.active
        p = self.parsing
        if s is not None and s is not p:
            # The error is in a request pipelined behind the one being served (or between
            # requests): serve the complete requests before it, then answer the error and
            # close, as a server reading one request at a time would.
            if p is not None:
                self.parsing = None
                if p in self.queue:
                    self.queue.remove(p)
                p.cancel()
            self._in_head = False
            self._deferred = (status, details)
            self.pause_reading()
            return
        self.closing = True
        if s is not None and s.response_started:
            s.on_downstream_reset()
            self.abort()
            return
        for q in (self.parsing, *self.queue):
            if q is not None and q is not s:
                q.cancel()
        self.queue.clear()
        self.parsing = None
        if s is not None:
            s.fail_local(status, details)
        else:
            self.stats.downstream_rq_total += 1
            self.stats.record_status(status)
            self.write(local_reply_bytes(status, REASONS.get(status, "Error"), close=True))
            self.proxy.log_protocol_error(self, status, details)
            self.close()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.stats.downstream_cx_tx_bytes_total += len(data)
            self.transport.write(data)  # type: ignore[union-attr]

    def stream_done(self, stream: Stream, keep_alive: bool) -> None:
        """The active stream's response is complete."""
        if self.active is not stream:
            return
        self.active = None
        self._last_activity = self.loop.time()
        if not keep_alive or self.closing:
            self.closing = True
            for q in self.queue:
                q.cancel()
            self.queue.clear()
            if self.parsing is not None and self.parsing is not stream:
                self.parsing.cancel()
                self.parsing = None
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.queued_bytes = 0
            if self._queue_paused:
                self._queue_paused = False
                self.resume_reading()
            self.active = nxt
            nxt.start()
        elif self._deferred is not None:
            status, details = self._deferred
            self._deferred = None
            self.error_reply(status, details)


def _slug(e: Exception) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(e)).strip("_")[:60]
