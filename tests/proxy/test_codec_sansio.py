"""The HTTP/1.1 codec without sockets: the downstream connection (``codec.DownstreamConnection``)
and the upstream connection (``upstream.UpstreamConnection``) are asyncio protocols, driven
here with bytes through fake transports that record what the proxy writes.

A test builds a proxy from a config (no listener is bound, no upstream is connected),
attaches a client connection to the listener's filter chain, and puts idle "pooled"
upstream connections in the cluster's pool: a request then goes out to the upstream's fake
transport synchronously, and the bytes fed back as the upstream's response reach the
client's fake transport synchronously too. Only a few paths need the loop to turn (an
attempt that failed is finished by a task; a transport's close reports ``connection_lost``
on the next iteration, as real transports do).

The socket-level suites (test_http1.py, test_badinput.py) cover the same ground end to end;
these pin the codec's byte-level behaviour and run in milliseconds.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest
import uvloop
from proxyutil import simple_config

from pilotfish.proxy import model
from pilotfish.proxy.listener import ListenerRuntime
from pilotfish.proxy.server import Proxy
from pilotfish.proxy.upstream import UpstreamConnection

LISTEN_PORT = 15001
CLIENT = ("10.0.0.7", 40000)  # the client's address, as the downstream transport reports it
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
BODY_UPE = b"upstream connect error or disconnect/reset before headers. reset reason: protocol error"
BODY_UC = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"


# --------------------------------------------------------------------------- harness


class FakeTransport:
    """The transport seam: records what the protocol writes, and reports its own close to
    the protocol (``connection_lost``) on the next loop iteration, as asyncio transports do."""

    def __init__(self, proto: Any, peer: tuple[str, int], local: tuple[str, int]) -> None:
        self.proto = proto
        self.peer = peer
        self.local = local
        self.out = bytearray()  # written while open
        self.late = bytearray()  # written after close() (a real transport drops these)
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        if self.closed:
            self.late += data
        else:
            self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": self.local}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.proto.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, *a: Any, **k: Any) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def feed_eof(self) -> None:
        """The peer half-closed: what the event loop does on a read of 0 bytes."""
        if not self.proto.eof_received():
            self.close()


class Upstream(NamedTuple):
    conn: UpstreamConnection
    t: FakeTransport

    def respond(self, data: bytes) -> None:
        self.conn.data_received(data)


class Harness:
    def __init__(self, px: Proxy, lr: ListenerRuntime) -> None:
        self.px = px
        self.lr = lr
        self.cluster = px.snapshot.clusters["c"]
        self.pool = self.cluster.pool_for(self.cluster.hosts[0])
        self.upstreams: list[Upstream] = []
        self.conn, self.down = self.connect()

    def connect(self, peer: tuple[str, int] = CLIENT) -> tuple[Any, FakeTransport]:
        conn = self.lr.protocol_for(self.lr.default)  # type: ignore[arg-type]
        t = FakeTransport(conn, peer, ("127.0.0.1", LISTEN_PORT))
        conn.connection_made(t)
        return conn, t

    def upstream(self) -> Upstream:
        """An established upstream connection, idle in the pool: the next request takes it."""
        up = UpstreamConnection(self.pool)
        t = FakeTransport(up, ("127.0.0.1", 9), ("127.0.0.1", 50000 + len(self.upstreams)))
        up.connection_made(t)
        self.pool.active.add(up)
        self.cluster.cx_active += 1
        self.pool.idle.append(up)
        u = Upstream(up, t)
        self.upstreams.append(u)
        return u

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    async def close(self) -> None:
        for t in [self.down, *(u.t for u in self.upstreams)]:
            t.close()
        await settle()
        await self.px.drain_and_stop()


async def settle(n: int = 5) -> None:
    """Let callbacks and tasks scheduled by the proxy run (no I/O is involved)."""
    for _ in range(n):
        await asyncio.sleep(0)


@asynccontextmanager
async def harness(http_opts: dict | None = None, **cfg_kw: Any) -> AsyncIterator[Harness]:
    raw = simple_config(LISTEN_PORT, {"c": [9]}, http_opts=http_opts,
                        access_log={"path": "/dev/null"}, **cfg_kw)
    raw["admin"] = {"enabled": False}
    cfg = model.decode_config(raw)
    px = Proxy(cfg)
    # the listener runtime without bind(): connections are attached to it by hand
    lr = ListenerRuntime(px, cfg.listeners[0])
    px.listeners[lr.name] = lr
    h = Harness(px, lr)
    try:
        yield h
    finally:
        await h.close()
    attempts = asyncio.get_running_loop().connect_attempts  # type: ignore[attr-defined]
    assert not attempts, f"the proxy tried to open upstream connections: {attempts}"


class NoConnectLoop(uvloop.Loop):
    """uvloop, but an upstream connection the test did not inject is never opened: the
    attempt is recorded (and checked at teardown) and fails as a refused connection."""

    def __init__(self) -> None:
        super().__init__()
        self.connect_attempts: list[tuple] = []

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.connect_attempts.append(args[1:])
        raise ConnectionRefusedError("sans-IO test: no upstream connections")


def in_loop(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in a fresh event loop (parametrize still works)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=NoConnectLoop) as r:
            r.run(fn(*args, **kwargs))

    return wrapper


# --------------------------------------------------------------------------- message parsing


class Message(NamedTuple):
    start: str  # the request or status line
    headers: list[tuple[str, str]]  # names lowercased, in order
    body: bytes  # de-chunked
    raw_body: bytes  # as framed on the wire

    @property
    def status(self) -> int:
        return int(self.start.split(" ")[1])

    def get(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def one(self, name: str) -> str:
        values = self.get(name)
        assert len(values) == 1, (name, self.headers)
        return values[0]

    def names(self) -> set[str]:
        return {n for n, _ in self.headers}


def _head(data: bytes, i: int) -> tuple[str, list[tuple[str, str]], int]:
    end = data.find(b"\r\n\r\n", i)
    assert end >= 0, f"incomplete head: {data[i:i + 300]!r}"
    lines = data[i:end].decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        n, sep, v = line.partition(":")
        assert sep and n == n.strip(), f"malformed header line {line!r}"
        headers.append((n.lower(), v.strip(" \t")))
    return lines[0], headers, end + 4


def _chunked(data: bytes, i: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        eol = data.find(b"\r\n", i)
        assert eol >= 0, f"incomplete chunk size line: {data[i:i + 100]!r}"
        size = int(data[i:eol], 16)  # no extensions: the proxy never writes them
        i = eol + 2
        if size == 0:
            assert data[i:i + 2] == b"\r\n", f"trailer or garbage after the last chunk: {data[i:i + 100]!r}"
            return bytes(body), i + 2
        assert len(data) >= i + size + 2, f"incomplete chunk: {data[i:i + 100]!r}"
        body += data[i:i + size]
        assert data[i + size:i + size + 2] == b"\r\n", f"chunk not followed by CRLF: {data[i:i + size + 10]!r}"
        i += size + 2


def _body(data: bytes, i: int, m_headers: list[tuple[str, str]], no_body: bool,
          close_delimited: bool) -> tuple[bytes, int]:
    te = [v for n, v in m_headers if n == "transfer-encoding"]
    cl = [v for n, v in m_headers if n == "content-length"]
    if no_body:
        return b"", i
    if te:
        assert te == ["chunked"], te
        assert not cl, "both content-length and transfer-encoding"
        return _chunked(data, i)
    if cl:
        assert len(cl) == 1, cl
        n = int(cl[0])
        assert len(data) >= i + n, f"body shorter than content-length {n}: {data[i:]!r}"
        return data[i:i + n], i + n
    if close_delimited:
        return data[i:], len(data)
    return b"", i


def responses(data: bytes, head_only: bool = False) -> list[Message]:
    """Parse what the client received into responses; trailing bytes are an error."""
    out = []
    i = 0
    data = bytes(data)
    while i < len(data):
        start, headers, i = _head(data, i)
        assert start.startswith("HTTP/1.1 "), start
        status = int(start.split(" ")[1])
        no_body = head_only or status in (204, 304) or status < 200
        j = i
        body, i = _body(data, i, headers, no_body, close_delimited=True)
        out.append(Message(start, headers, body, data[j:i]))
    return out


def requests(data: bytes) -> list[Message]:
    """Parse what the upstream received into requests; trailing bytes are an error."""
    out = []
    i = 0
    data = bytes(data)
    while i < len(data):
        start, headers, i = _head(data, i)
        assert re.fullmatch(r"[A-Z]+ \S+ HTTP/1\.1", start), start
        j = i
        body, i = _body(data, i, headers, False, close_delimited=False)
        out.append(Message(start, headers, body, data[j:i]))
    return out


def one_request(t: FakeTransport) -> Message:
    reqs = requests(t.out)
    assert len(reqs) == 1, reqs
    return reqs[0]


def one_response(t: FakeTransport, head_only: bool = False) -> Message:
    resps = responses(t.out, head_only)
    assert len(resps) == 1, resps
    return resps[0]


OK_2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


# --------------------------------------------------------------------------- 1. request forwarding


@in_loop
async def test_request_line_and_end_to_end_headers_forwarded() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET /path?q=1 HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\nX-Custom: v 1\r\n"
               b"User-Agent: t/1\r\n\r\n")
        req = one_request(up.t)
        assert req.start == "GET /path?q=1 HTTP/1.1"
        assert req.one("host") == "a.example"
        assert req.one("accept") == "*/*"
        assert req.one("x-custom") == "v 1"
        assert req.one("user-agent") == "t/1"
        assert req.body == b"" and "content-length" not in req.names()
        assert h.down.out == b""  # nothing for the client until the upstream answers


@in_loop
async def test_method_and_body_with_content_length_forwarded() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"PUT /items/7 HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
        req = one_request(up.t)
        assert req.start == "PUT /items/7 HTTP/1.1"
        assert req.one("content-length") == "5" and "transfer-encoding" not in req.names()
        assert req.raw_body == b"hello"


@in_loop
async def test_hop_by_hop_request_headers_dropped() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
               b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: foo/2\r\nTrailer: X-T\r\n"
               b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Hop: secret\r\nX-Keep: yes\r\n\r\n")
        req = one_request(up.t)
        for name in ("connection", "keep-alive", "proxy-connection", "te", "upgrade", "trailer",
                     "proxy-authorization", "x-hop"):
            assert name not in req.names(), (name, req.headers)
        assert req.one("x-keep") == "yes"


@in_loop
async def test_chunked_request_is_reframed_with_a_single_transfer_encoding() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")
        req = one_request(up.t)
        assert req.get("transfer-encoding") == ["chunked"]
        assert "content-length" not in req.names()
        # chunk extensions and trailers do not travel: the body is re-framed
        assert req.raw_body == b"5\r\nhello\r\n0\r\n\r\n"


@in_loop
async def test_connection_nominating_content_length_cannot_desync_the_upstream() -> None:
    """``Connection: content-length`` strips the header; the body must then be re-framed
    (chunked), not sent with no length at all."""
    async with harness() as h:
        up = h.upstream()
        h.send(b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello")
        req = one_request(up.t)
        assert req.get("transfer-encoding") == ["chunked"] and "content-length" not in req.names()
        assert req.body == b"hello"


@in_loop
async def test_repeated_request_headers_are_joined() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
        assert one_request(up.t).get("x-a") == ["1, 2"]


@in_loop
async def test_request_id_generated_when_absent_and_kept_when_present() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        first = one_request(up.t).one("x-request-id")
        assert UUID4_RE.match(first), first
        up.t.out.clear()
        up.respond(OK_2)
        h.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        second = one_request(up.t).one("x-request-id")
        assert UUID4_RE.match(second) and second != first
        up.t.out.clear()
        up.respond(OK_2)
        h.send(b"GET /3 HTTP/1.1\r\nHost: a\r\nX-Request-Id: my-own-id\r\n\r\n")
        assert one_request(up.t).get("x-request-id") == ["my-own-id"]


@in_loop
async def test_request_id_not_generated_when_disabled() -> None:
    async with harness({"generate_request_id": False}) as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert "x-request-id" not in one_request(up.t).names()


@in_loop
async def test_outbound_sidecar_forwarded_headers() -> None:
    """A sidecar's outbound chain (use_remote_address off, as translate/sidecar.py builds it):
    x-forwarded-proto is added when absent and a client's value is kept; x-forwarded-for is
    neither added nor extended."""
    async with harness({"traffic_direction": "OUTBOUND"}) as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        req = one_request(up.t)
        assert req.get("x-forwarded-proto") == ["http"]
        assert "x-forwarded-for" not in req.names()
        up.t.out.clear()
        up.respond(OK_2)
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n")
        req = one_request(up.t)
        assert req.get("x-forwarded-proto") == ["https"]
        assert req.get("x-forwarded-for") == ["203.0.113.7"]


@in_loop
async def test_edge_forwarded_headers_with_use_remote_address() -> None:
    """use_remote_address (a gateway): the client's address is appended to x-forwarded-for
    and x-forwarded-proto says how the client connected, whatever the client claimed."""
    async with harness({"use_remote_address": True, "traffic_direction": "OUTBOUND"}) as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        req = one_request(up.t)
        assert req.get("x-forwarded-for") == ["10.0.0.7"]
        assert req.get("x-forwarded-proto") == ["http"]
        up.t.out.clear()
        up.respond(OK_2)
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n")
        req = one_request(up.t)
        assert req.get("x-forwarded-for") == ["203.0.113.7, 10.0.0.7"]
        assert req.get("x-forwarded-proto") == ["http"]


@in_loop
async def test_absolute_form_target_sets_authority() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET http://b.example:8080/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n")
        req = one_request(up.t)
        assert req.start == "GET /x?y=1 HTTP/1.1"
        assert req.get("host") == ["b.example:8080"]


@in_loop
async def test_route_selected_by_host_and_unrouted_host_gets_404_locally() -> None:
    async with harness(domains=["a.example"]) as h:
        up = h.upstream()
        h.send(b"GET /x HTTP/1.1\r\nHost: b.example\r\n\r\n")
        r = one_response(h.down)
        assert r.status == 404 and r.body == b""
        assert up.t.out == b""
        assert not h.down.closed and "connection" not in r.names()  # a local reply keeps the connection
        h.down.out.clear()
        h.send(b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n")
        assert one_request(up.t).start == "GET /x HTTP/1.1"


@in_loop
async def test_http10_client_without_host_gets_an_http11_upstream_request() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET /old HTTP/1.0\r\n\r\n")
        req = one_request(up.t)
        assert req.start == "GET /old HTTP/1.1"
        assert req.get("host") == [f"127.0.0.1:{LISTEN_PORT}"]  # the address the client reached
        up.respond(OK_2)
        r = one_response(h.down)
        assert r.status == 200 and r.body == b"hi"
        assert r.get("connection") == ["close"]  # HTTP/1.0 without keep-alive
        await settle()
        assert h.down.closed and h.down.late == b""


@in_loop
async def test_http10_client_with_keep_alive() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        assert "connection" not in one_request(up.t).names()
        up.respond(OK_2)
        r = one_response(h.down)
        assert r.get("connection") == ["keep-alive"] and r.body == b"hi"
        await settle()
        assert not h.down.closed


# --------------------------------------------------------------------------- 2. response framing


@in_loop
async def test_content_length_response_passthrough() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: gunicorn\r\n"
                   b"Content-Length: 5\r\n\r\nhello")
        r = one_response(h.down)
        assert r.start == "HTTP/1.1 200 OK"
        assert r.one("content-length") == "5" and r.raw_body == b"hello"
        assert "transfer-encoding" not in r.names()
        assert r.one("content-type") == "text/plain"
        assert r.get("server") == ["istio-envoy"]  # the upstream's server header is replaced
        assert r.one("x-envoy-upstream-service-time").isdigit()
        assert "connection" not in r.names()
        assert not h.down.closed
        assert h.pool.idle[-1] is up.conn  # the upstream connection went back to the pool


@in_loop
async def test_server_name_from_config() -> None:
    async with harness({"server_name": "pilotfish-test"}) as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(OK_2)
        assert one_response(h.down).get("server") == ["pilotfish-test"]


@in_loop
async def test_response_streams_as_it_arrives() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        assert bytes(h.down.out).endswith(b"\r\n\r\nhello")  # head and the first part, at once
        up.respond(b"world")
        r = one_response(h.down)
        assert r.body == b"helloworld" and not h.down.closed


@in_loop
async def test_close_delimited_response_is_chunked_for_http11_client() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart1")
        assert bytes(h.down.out).endswith(b"\r\n\r\n5\r\npart1\r\n")  # streamed as a chunk
        up.respond(b"part2")
        up.t.feed_eof()  # the end of the body is the upstream closing
        await settle()
        r = one_response(h.down)
        assert r.get("transfer-encoding") == ["chunked"] and "content-length" not in r.names()
        assert r.raw_body == b"5\r\npart1\r\n5\r\npart2\r\n0\r\n\r\n"
        assert not h.down.closed  # the client's connection stays reusable
        assert up.conn not in h.pool.idle


@in_loop
async def test_close_delimited_response_to_http10_client_closes() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\n\r\nold")
        up.t.feed_eof()
        await settle()
        r = one_response(h.down)
        assert r.get("connection") == ["close"]
        assert "transfer-encoding" not in r.names() and "content-length" not in r.names()
        assert r.raw_body == b"old"
        assert h.down.closed


@in_loop
async def test_chunked_upstream_response_is_rechunked() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n"
                   b"0\r\nX-T: 1\r\n\r\n")
        r = one_response(h.down)
        assert r.get("transfer-encoding") == ["chunked"]
        assert r.body == b"hello world"
        assert h.pool.idle[-1] is up.conn


@pytest.mark.parametrize("framing", [b"Content-Length: 1000\r\n", b"Transfer-Encoding: chunked\r\n", b""],
                         ids=["content-length", "chunked", "none"])
@in_loop
async def test_head_response_has_no_body(framing: bytes) -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
        assert one_request(up.t).start == "HEAD /h HTTP/1.1"
        up.respond(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n")
        r = one_response(h.down, head_only=True)
        assert "transfer-encoding" not in r.names()  # no framing for a body that never comes
        assert r.get("content-length") == (["1000"] if b"Length" in framing else [])
        assert bytes(h.down.out).endswith(b"\r\n\r\n")  # no body bytes at all
        assert not h.down.closed
        h.down.out.clear()
        up2 = h.upstream()
        h.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        assert one_request(up2.t).start == "GET /next HTTP/1.1"
        up2.respond(OK_2)
        assert one_response(h.down).body == b"hi"


@in_loop
async def test_upstream_connection_is_reused_after_a_head_response() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await settle()
        assert not up.t.closed and h.pool.idle[-1] is up.conn


@pytest.mark.parametrize("status,extra", [
    (204, b"Content-Length: 0\r\n"),
    (304, b'ETag: "v1"\r\nContent-Length: 1234\r\n'),
    (304, b""),
])
@in_loop
async def test_204_and_304_have_no_body(status: int, extra: bytes) -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 %d X\r\n%s\r\n" % (status, extra))
        out = bytes(h.down.out)
        assert out.startswith(b"HTTP/1.1 %d " % status) and out.endswith(b"\r\n\r\n"), out
        r = one_response(h.down)
        assert "transfer-encoding" not in r.names()
        if status == 204:
            assert "content-length" not in r.names()  # never on a 204 (RFC 9110 8.6)
        assert h.pool.idle[-1] is up.conn  # the exchange ended without waiting for a body
        assert not h.down.closed


@in_loop
async def test_hop_by_hop_response_headers_removed() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
                   b"Proxy-Connection: keep-alive\r\nX-Hop: secret\r\nUpgrade: foo\r\nTrailer: X-T\r\n"
                   b"Proxy-Authenticate: Basic\r\nX-Keep: 1\r\nContent-Length: 2\r\n\r\nok")
        r = one_response(h.down)
        for name in ("connection", "keep-alive", "proxy-connection", "upgrade", "trailer",
                     "proxy-authenticate", "x-hop"):
            assert name not in r.names(), (name, r.headers)
        assert r.get("x-keep") == ["1"] and r.body == b"ok"


@in_loop
async def test_repeated_response_headers_are_not_joined() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2, c\r\nContent-Length: 0\r\n\r\n")
        assert one_response(h.down).get("set-cookie") == ["a=1; Path=/", "b=2, c"]


@in_loop
async def test_interim_1xx_from_upstream_is_swallowed() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        assert h.down.out == b""
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nfin")
        r = one_response(h.down)
        assert r.status == 200 and r.body == b"fin"


@in_loop
async def test_upstream_connection_close_is_not_pooled_and_client_stays_open() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi")
        r = one_response(h.down)
        assert r.body == b"hi" and "connection" not in r.names()
        await settle()
        assert up.t.closed and up.conn not in h.pool.idle and up.conn not in h.pool.active
        assert not h.down.closed


# --------------------------------------------------------------------------- 3. keep-alive, pipelining


@in_loop
async def test_sequential_requests_reuse_both_connections() -> None:
    async with harness() as h:
        up = h.upstream()
        for i in range(3):
            h.send(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            assert one_request(up.t).start == f"GET /{i} HTTP/1.1"
            up.t.out.clear()
            up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i)
            assert one_response(h.down).body == b"%d" % i
            h.down.out.clear()
        assert not h.down.closed and up.conn.requests == 3
        assert h.conn.stats.downstream_rq_total == 3 and h.conn.stats.downstream_cx_total == 1


@in_loop
async def test_pipelined_requests_are_forwarded_one_at_a_time_and_answered_in_order() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
               b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
               b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n")
        assert [r.start for r in requests(up.t.out)] == ["GET /first HTTP/1.1"]
        up.t.out.clear()
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        assert [r.status for r in responses(h.down.out)] == [200]  # answered before the next goes out
        await settle()  # the connection is back in the pool once the exchange ended
        # the second went out (with its buffered body) only once the first was answered
        second = one_request(up.t)
        assert second.start == "POST /second HTTP/1.1" and second.body == b"abc"
        up.t.out.clear()
        up.respond(b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n2")
        await settle()
        assert one_request(up.t).start == "GET /third HTTP/1.1"
        up.respond(b"HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\n3")
        rs = responses(h.down.out)
        assert [(r.status, r.body) for r in rs] == [(200, b"1"), (201, b"2"), (202, b"3")]
        assert all("connection" not in r.names() for r in rs)
        assert not h.down.closed


@in_loop
async def test_request_with_connection_close_closes_after_the_response() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
               b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
        assert [r.start for r in requests(up.t.out)] == ["GET /a HTTP/1.1"]
        up.respond(OK_2)
        r = one_response(h.down)
        assert r.get("connection") == ["close"] and r.body == b"hi"
        await settle()
        assert h.down.closed and h.down.late == b""
        assert [r.start for r in requests(up.t.out)] == ["GET /a HTTP/1.1"]  # /never was not served


@in_loop
async def test_client_half_close_finishes_the_response_then_closes() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.down.feed_eof()
        assert not h.down.closed  # the response in flight is still delivered
        up.respond(OK_2)
        assert one_response(h.down).body == b"hi"
        await settle()
        assert h.down.closed


@in_loop
async def test_client_disconnect_abandons_the_upstream_exchange() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.down.close()  # the client went away
        await settle()
        assert up.t.closed  # the half-done exchange cannot be reused
        assert up.conn not in h.pool.idle and h.cluster.cx_active == 0
        assert h.cluster.rq_active == 0


@in_loop
async def test_downstream_write_backpressure_pauses_the_upstream() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        h.conn.pause_writing()  # the client's transport buffer is full
        assert not up.t.reading
        h.conn.resume_writing()
        assert up.t.reading
        up.respond(b"def")
        assert one_response(h.down).body == b"abcdef"


@in_loop
async def test_large_pipelined_body_pauses_reading_until_its_turn() -> None:
    async with harness() as h:
        up = h.upstream()
        big = b"x" * (300 * 1024)
        h.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
               b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        assert not h.down.reading  # the queued body is over the limit: stop reading
        up.t.out.clear()
        up.respond(OK_2)
        await settle()
        assert h.down.reading
        req = one_request(up.t)
        assert req.start == "POST /big HTTP/1.1" and req.body == big


@in_loop
async def test_large_pipelined_chunked_body_resumes_reading_at_its_turn() -> None:
    async with harness() as h:
        up = h.upstream()
        chunks = b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(300))  # 300 KiB in 1 KiB chunks
        h.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
               b"POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        assert not h.down.reading
        up.respond(OK_2)
        await settle()
        assert b"POST /big HTTP/1.1\r\n" in up.t.out
        assert h.down.reading  # else the last chunk is never read: the request hangs


# --------------------------------------------------------------------------- 4. bad input

GET = b"GET /get HTTP/1.1\r\nHost: a\r\n"
POST = b"POST /up HTTP/1.1\r\nHost: a\r\n"
LIMITS = {"max_request_headers_kb": 1, "max_headers_count": 10, "max_request_bytes": 16}

# (id, bytes, status): refused while parsing the head, so nothing goes upstream
HEAD_CASES = [
    ("cl-and-te", POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-and-cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("duplicate-cl-same", POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("duplicate-cl-different", POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl-list", POST + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("cl-invalid", POST + b"Content-Length: 5x\r\n\r\nhello", 400),
    ("cl-negative", POST + b"Content-Length: -1\r\n\r\n", 400),
    ("obs-fold", GET + b"X-A: a\r\n b\r\n\r\n", 400),
    ("te-obs-fold", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("bare-lf-request-line", b"GET /get HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("bare-lf-header", b"GET /get HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400),
    ("bare-lf-everywhere", b"GET /get HTTP/1.1\nHost: a\n\n", 400),
    ("missing-host", b"GET /get HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    ("duplicate-host", GET + b"Host: b\r\n\r\n", 400),
    ("invalid-host", b"GET /get HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("http-2.0", b"GET /get HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("http-0.9", b"GET /get HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    ("http-0.9-style", b"GET /get\r\n\r\n", 505),
    ("http-1.2", b"GET /get HTTP/1.2\r\nHost: a\r\n\r\n", 400),
    ("connect", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 501),
    ("te-gzip", POST + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("te-chunked-gzip", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("oversized-request-line", b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
    ("oversized-header", GET + b"X-Big: " + b"b" * 1100 + b"\r\n\r\n", 431),
    ("too-many-headers", GET + b"".join(b"X-%d: v\r\n" % i for i in range(10)) + b"\r\n", 431),
    ("cl-over-max-request-bytes", POST + b"Content-Length: 17\r\n\r\n" + b"z" * 17, 413),
    ("asterisk-form-get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form-bad-scheme", b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("unsupported-upgrade", GET + b"Connection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n", 403),
    ("websocket-upgrade-with-a-body", POST + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Content-Length: 2\r\n\r\nhi", 403),
    ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
]


def assert_refused(h: Harness, status: int) -> Message:
    """Exactly one ``status`` response, with connection: close, and nothing after it."""
    r = one_response(h.down)
    assert r.status == status, bytes(h.down.out)
    assert r.get("connection") == ["close"]
    assert r.get("server") == ["istio-envoy"]
    return r


@pytest.mark.parametrize("data,status", [c[1:] for c in HEAD_CASES], ids=[c[0] for c in HEAD_CASES])
@in_loop
async def test_refused_head(data: bytes, status: int) -> None:
    async with harness(LIMITS) as h:
        up = h.upstream()
        h.send(data)
        assert_refused(h, status)
        await settle()
        assert h.down.closed and h.down.late == b""
        assert up.t.out == b""  # nothing was forwarded
        assert h.pool.idle[-1] is up.conn  # and the upstream connection is untouched


@in_loop
async def test_refused_head_split_across_reads() -> None:
    """The same refusal when the bytes arrive one at a time (parser state across reads)."""
    async with harness(LIMITS) as h:
        up = h.upstream()
        for b in POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n":
            if h.down.closed:
                break
            h.send(bytes([b]))
        assert_refused(h, 400)
        assert up.t.out == b""


@in_loop
async def test_head_growing_past_the_limit_without_ending_is_refused() -> None:
    async with harness(LIMITS) as h:
        up = h.upstream()
        h.send(GET + b"X-Slow: ")
        for _ in range(20):
            if h.down.out:
                break
            h.send(b"y" * 100)  # never a line end: refused once over 1 KiB, not buffered forever
        assert_refused(h, 431)
        assert up.t.out == b""


@in_loop
async def test_small_pipelined_head_after_a_large_body_in_one_read_is_not_431() -> None:
    async with harness(LIMITS | {"max_request_bytes": None}) as h:
        up = h.upstream()
        h.send(POST + b"Content-Length: 2000\r\n\r\n" + b"b" * 2000 + b"GET /b HTTP/1.1\r\nHo")
        up.respond(OK_2)
        await settle()
        h.send(b"st: a\r\n\r\n")  # /b: a 33-byte head, far under the 1 KiB limit
        await settle()
        assert [r.status for r in responses(h.down.out)] == [200]
        assert b"GET /b HTTP/1.1\r\n" in up.t.out


@in_loop
async def test_codec_errors_are_counted() -> None:
    async with harness() as h:
        h.upstream()
        h.send(POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert_refused(h, 400)
        assert h.conn.stats.downstream_cx_protocol_error == 1


# the head is valid and already forwarded when the body turns out bad
BODY_CASES = [
    ("chunk-size-invalid", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-negative", POST + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-data-too-long", POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n", 400),
    ("chunked-over-max-request-bytes", POST + b"Transfer-Encoding: chunked\r\n\r\n11\r\n" + b"z" * 17
     + b"\r\n0\r\n\r\n", 413),
]


@pytest.mark.parametrize("data,status", [c[1:] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES])
@in_loop
async def test_refused_body(data: bytes, status: int) -> None:
    async with harness(LIMITS) as h:
        up = h.upstream()
        h.send(data)
        assert_refused(h, status)
        await settle()
        assert h.down.closed and h.down.late == b""
        # the head (and any body before the error) went upstream, never the last chunk:
        # the exchange is abandoned, and the upstream connection with it
        head, sep, body = bytes(up.t.out).partition(b"\r\n\r\n")
        assert head.startswith(b"POST /up HTTP/1.1\r\n") and sep
        assert not body.endswith(b"0\r\n\r\n") and b"z" * 17 not in body
        assert up.t.closed and up.conn not in h.pool.idle


PIPELINED_BAD = [
    ("cl-and-te", POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("missing-host", b"GET /get HTTP/1.1\r\n\r\n", 400),
    ("chunk-size-invalid", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("oversized-header", GET + b"X-Big: " + b"b" * 1100 + b"\r\n\r\n", 431),
    ("connect", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 501),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00", 400),
]


@pytest.mark.parametrize("bad,status", [c[1:] for c in PIPELINED_BAD], ids=[c[0] for c in PIPELINED_BAD])
@in_loop
async def test_error_in_pipelined_request_is_answered_after_the_earlier_ones(bad: bytes, status: int) -> None:
    async with harness(LIMITS) as h:
        up = h.upstream()
        h.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n" + bad)
        assert h.down.out == b""  # the error waits for the requests before it
        assert one_request(up.t).start == "GET /first HTTP/1.1"
        up.t.out.clear()
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        await settle()
        assert one_request(up.t).start == "GET /second HTTP/1.1"
        up.t.out.clear()
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        rs = responses(h.down.out)
        assert [(r.status, r.body) for r in rs[:2]] == [(200, b"1"), (200, b"2")]
        assert len(rs) == 3 and rs[2].status == status, bytes(h.down.out)
        assert "connection" not in rs[0].names() and "connection" not in rs[1].names()
        assert rs[2].get("connection") == ["close"]
        await settle()
        assert h.down.closed and h.down.late == b""
        assert up.t.out == b""  # the bad request never went upstream


# --------------------------------------------------------------------------- timeouts (loop time)


async def wait_closed(t: FakeTransport, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not t.closed and loop.time() < end:
        await asyncio.sleep(0.01)


@in_loop
async def test_slow_request_head_gets_408() -> None:
    async with harness({"request_headers_timeout": 0.05}) as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
        await wait_closed(h.down)
        assert_refused(h, 408)
        assert up.t.out == b""


@in_loop
async def test_idle_keep_alive_connection_is_closed_silently() -> None:
    async with harness({"idle_timeout": 0.05}) as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(OK_2)
        assert one_response(h.down).body == b"hi"
        h.down.out.clear()
        await wait_closed(h.down)
        assert h.down.closed and h.down.out == b""


# --------------------------------------------------------------------------- 5. request bodies


@in_loop
async def test_chunked_request_body_streams_upstream_as_it_arrives() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        head = bytes(up.t.out)  # the head leaves before any of the body
        assert head.startswith(b"POST /up HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")
        assert b"\r\ntransfer-encoding: chunked\r\n" in head
        h.send(b"5\r\nhello\r\n")
        assert bytes(up.t.out) == head + b"5\r\nhello\r\n"
        h.send(b"6\r\n wor")  # a chunk split across reads is forwarded as it comes
        assert bytes(up.t.out) == head + b"5\r\nhello\r\n4\r\n wor\r\n"
        h.send(b"ld\r\n0\r\n\r\n")
        req = one_request(up.t)
        assert req.body == b"hello world"
        assert h.down.out == b""
        up.respond(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        assert one_response(h.down).status == 201
        assert h.pool.idle[-1] is up.conn


@in_loop
async def test_content_length_body_streams_upstream_as_it_arrives() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        assert bytes(up.t.out).endswith(b"\r\n\r\nhello")
        h.send(b"world")
        req = one_request(up.t)
        assert req.one("content-length") == "10" and req.raw_body == b"helloworld"
        assert "transfer-encoding" not in req.names()


@in_loop
async def test_empty_chunked_body_is_terminated_upstream() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        req = one_request(up.t)
        assert req.get("transfer-encoding") == ["chunked"] and req.raw_body == b"0\r\n\r\n"


@in_loop
async def test_early_upstream_response_closes_both_sides() -> None:
    """The upstream answers before the request body is complete: neither connection can be
    reused (the rest of the body would be read as a next request)."""
    async with harness() as h:
        up = h.upstream()
        h.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"e" * 10)
        up.respond(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
        r = one_response(h.down)
        assert (r.status, r.body) == (413, b"big!")
        assert ("connection", "close") in r.headers  # the client is told it will close
        await settle()
        assert h.down.closed and up.t.closed
        assert up.conn not in h.pool.idle


# --------------------------------------------------------------------------- 6. Expect: 100-continue


@in_loop
async def test_expect_100_continue_is_answered_by_the_proxy_and_stripped() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert h.down.out == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert up.t.out.endswith(b"\r\n\r\n")  # the head went upstream, waiting for the body
        h.send(b"hello")
        req = one_request(up.t)
        assert "expect" not in req.names() and req.one("content-length") == "5"
        assert req.raw_body == b"hello"
        up.respond(OK_2)
        rs = responses(h.down.out)
        assert [r.status for r in rs] == [100, 200] and rs[1].body == b"hi"


@in_loop
async def test_expect_100_continue_without_body_gets_no_interim_response() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
        assert h.down.out == b""
        assert "expect" not in one_request(up.t).names()
        up.respond(OK_2)
        assert [r.status for r in responses(h.down.out)] == [200]


# --------------------------------------------------------------------------- upgrades


@in_loop
async def test_h2c_upgrade_request_is_answered_in_http11() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()  # the upgrade decision is taken after the parser returns
        req = one_request(up.t)
        assert req.start == "GET /x HTTP/1.1"
        for name in ("connection", "upgrade", "http2-settings"):
            assert name not in req.names(), (name, req.headers)
        up.t.out.clear()
        up.respond(OK_2)
        await settle()
        assert one_request(up.t).start == "GET /y HTTP/1.1"  # the bytes after it were parsed too
        up.respond(OK_2)
        assert [r.status for r in responses(h.down.out)] == [200, 200]
        assert not h.down.closed


# --------------------------------------------------------------------------- 7. upstream errors

BAD_RESPONSES = [
    ("garbage", b"SSH-2.0-OpenSSH_9.6\r\n"),
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("duplicate-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("te-gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
    ("nul-in-header", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"),
    ("bad-status", b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("101", b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in BAD_RESPONSES], ids=[c[0] for c in BAD_RESPONSES])
@in_loop
async def test_malformed_upstream_response_is_a_502_upe(data: bytes) -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(data)
        await settle()  # a failed attempt is finished by the attempt task
        r = one_response(h.down)
        assert r.status == 502 and r.body == BODY_UPE
        assert b"OpenSSH" not in h.down.out and b"hello" not in h.down.out  # nothing of it leaks
        assert "connection" not in r.names()
        assert up.t.closed and up.conn not in h.pool.idle
        assert h.cluster.rq_active == 0 and h.cluster.stats.upstream_rq_total == 1
        # the client's connection still serves, on a fresh upstream connection
        h.down.out.clear()
        up2 = h.upstream()
        h.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        assert one_request(up2.t).start == "GET /next HTTP/1.1"
        up2.respond(OK_2)
        assert one_response(h.down).body == b"hi"
        assert up.t.out.count(b"GET ") == 1  # the broken connection got nothing more


@in_loop
async def test_upstream_reset_before_response_is_a_503_uc() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.t.feed_eof()
        await settle()
        r = one_response(h.down)
        assert r.status == 503 and r.body == BODY_UC
        assert not h.down.closed
        assert h.cluster.stats.upstream_rq_rx_reset == 1


@in_loop
async def test_malformed_chunk_after_response_started_cuts_the_response() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n")
        await settle()
        out = bytes(h.down.out)
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n2\r\nok\r\n")
        assert b"0\r\n\r\n" not in out  # never a clean end: the client sees the truncation
        assert h.down.aborted and h.down.late == b""
        assert up.t.closed


@in_loop
async def test_upstream_closing_mid_body_cuts_the_response() -> None:
    async with harness() as h:
        up = h.upstream()
        h.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        up.t.feed_eof()
        await settle()
        assert bytes(h.down.out).endswith(b"\r\n\r\nhello")
        assert h.down.aborted
        assert h.cluster.stats.upstream_rq_rx_reset == 1
