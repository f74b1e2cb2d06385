"""Strict parsing: malformed, ambiguous and abusive HTTP/1.1 from clients, over real sockets
to a real ``pilotfish proxy`` process.

Every refused request gets its status, ``connection: close`` and a closed connection, nothing
of it reaches the upstream, and the proxy goes on serving: a normal GET on a new connection
gets 200 afterwards. Request-smuggling shapes (RFC 9112 section 6.3, section 11.2) are the
main concern: any ambiguity about where a request ends is a 400 and a closed connection.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from proxyutil import ProxyProcess, Upstream, free_port, raw_closed, request, simple_config


class Env:
    def __init__(self, tmp) -> None:
        self.up = Upstream("a")
        self.port = free_port()
        self.version = 1
        self.px = ProxyProcess(self.config(), tmp, "badinput")
        self.prefix = f"http.0.0.0.0_{self.port}"

    def config(self, **http_opts) -> dict:
        return simple_config(self.port, {"a": [self.up.port]}, version=str(self.version),
                             http_opts=http_opts)

    @contextmanager
    def pushed(self, **http_opts) -> Iterator[None]:
        self.version += 1
        status, body = self.px.push(self.config(**http_opts))
        assert status == 200, body
        try:
            yield
        finally:
            self.version += 1
            status, body = self.px.push(self.config())
            assert status == 200, body

    def upstream_requests(self) -> int:
        return self.px.stat("cluster.a.upstream_rq_total")

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.px.access_lines(0, 0.1):
                if needle in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no access log line with {needle!r}")

    def stop(self) -> None:
        self.px.stop()
        self.up.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("badinput"))
    try:
        yield e
    finally:
        e.stop()


def assert_serves(env: Env) -> None:
    status, _, body = request(env.port, "GET", "/get")
    assert status == 200, (status, body[:200])
    assert env.px.alive()


def assert_refused(env: Env, data: bytes, status: int, forwarded: bool = False) -> bytes:
    """``data`` gets exactly one ``status`` response with ``connection: close``, the
    connection is closed, nothing reached the upstream (unless ``forwarded``: the head was
    valid and the error is in the body), and the proxy still serves."""
    before = env.upstream_requests()
    out, closed = raw_closed(env.port, data, timeout=3)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:300]
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nconnection: close" in head, out[:300]
    assert out.count(b"HTTP/1.1 ") == 1, out[:600]
    assert closed, "the proxy left the connection open"
    if not forwarded:
        assert env.upstream_requests() == before, "the refused request reached the upstream"
    assert_serves(env)
    return out


GET = b"GET /get HTTP/1.1\r\nHost: x\r\n"
POST = b"POST /upload HTTP/1.1\r\nHost: x\r\n"

# (id, bytes, status); all refused while parsing the head: nothing goes upstream
HEAD_CASES = [
    # --- request smuggling: more than one way to find the end of the body
    ("cl-and-te", POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    ("te-and-cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG", 400),
    ("duplicate-cl-same", POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("duplicate-cl-different", POST + b"Content-Length: 5\r\nContent-Length: 11\r\n\r\nhello", 400),
    ("cl-list", POST + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("cl-5x", POST + b"Content-Length: 5x\r\n\r\nhello", 400),
    ("cl-negative", POST + b"Content-Length: -1\r\n\r\nhello", 400),
    ("cl-plus", POST + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl-hex", POST + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("cl-two-numbers", POST + b"Content-Length: 5 5\r\n\r\nhello", 400),
    ("cl-overflow", POST + b"Content-Length: 99999999999999999999999\r\n\r\nhello", 400),
    ("te-obs-fold", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-space-before-colon", POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-twice", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-vertical-tab", POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
    # chunked not the final coding: the length cannot be determined (RFC 9112 6.3) -> 400
    ("te-chunked-identity", POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip-only", POST + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("te-xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    # chunked last, after a coding the proxy does not implement -> 501 (RFC 9112 6.1, Envoy)
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-identity-chunked", POST + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
    # --- line folding and line endings
    ("obs-fold", GET + b"X-A: a\r\n b\r\n\r\n", 400),
    ("bare-lf-header", b"GET /get HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400),
    ("bare-lf-request-line", b"GET /get HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("bare-lf-everywhere", b"GET /get HTTP/1.1\nHost: x\n\n", 400),
    ("bare-cr", b"GET /get HTTP/1.1\rHost: x\r\n\r\n", 400),
    # --- Host
    ("duplicate-host", GET + b"Host: y\r\n\r\n", 400),
    ("missing-host", b"GET /get HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    ("host-with-space", b"GET /get HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host-with-slash", b"GET /get HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host-with-quote", b'GET /get HTTP/1.1\r\nHost: a"b\r\n\r\n', 400),
    ("host-with-userinfo", b"GET /get HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
    ("host-bad-port", b"GET /get HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
    ("host-open-bracket", b"GET /get HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    ("absolute-form-userinfo", b"GET http://user@a/get HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    # --- version
    ("http-2.0", b"GET /get HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("http-0.9", b"GET /get HTTP/0.9\r\nHost: x\r\n\r\n", 505),
    ("http-1.2", b"GET /get HTTP/1.2\r\nHost: x\r\n\r\n", 400),
    ("http-garbage", b"GET /get HTTX/1.1\r\nHost: x\r\n\r\n", 400),
    # --- field syntax
    ("nul-in-value", GET + b"X-A: a\x00b\r\n\r\n", 400),
    ("ctl-in-value", GET + b"X-A: a\x01b\r\n\r\n", 400),
    ("del-in-value", GET + b"X-A: a\x7fb\r\n\r\n", 400),
    ("space-before-colon", GET + b"X-A : b\r\n\r\n", 400),
    ("tab-before-colon", GET + b"X-A\t: b\r\n\r\n", 400),
    ("space-in-name", GET + b"X A: b\r\n\r\n", 400),
    ("empty-name", GET + b": b\r\n\r\n", 400),
    ("no-colon", GET + b"XA\r\n\r\n", 400),
    ("nul-in-name", GET + b"X\x00A: b\r\n\r\n", 400),
    # --- request line
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("non-ascii-target", b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("ctl-in-target", b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("lowercase-method", b"get /get HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("unknown-method", b"FOO /get HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("absolute-form-bad-scheme", b"GET ftp://x/get HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("asterisk-form-get", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
]


@pytest.mark.parametrize("data,status", [c[1:] for c in HEAD_CASES], ids=[c[0] for c in HEAD_CASES])
def test_refused_head(env: Env, data: bytes, status: int) -> None:
    assert_refused(env, data, status)


# the head is valid and the request is under way when the body turns out malformed
BODY_CASES = [
    ("chunk-size-zz", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-overflow", POST + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-negative", POST + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-empty", POST + b"Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n"),
    ("chunk-data-too-long", POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n"),
    ("chunk-bare-lf", POST + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"),
    ("chunk-size-space", POST + b"Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES])
def test_refused_body(env: Env, data: bytes) -> None:
    assert_refused(env, data, 400, forwarded=True)


def test_protocol_errors_are_logged_and_counted(env: Env) -> None:
    before = env.px.stat(f"{env.prefix}.downstream_cx_protocol_error")
    assert_refused(env, POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)
    assert env.px.stat(f"{env.prefix}.downstream_cx_protocol_error") == before + 1
    line = env.wait_log("Transfer_Encoding_can_t_be_present_with_Content_Length")
    assert " 400 DPE " in line


def test_valid_framing_variants_are_accepted(env: Env) -> None:
    """The other side of strictness: what RFC 9112 allows must still work."""
    for data, expect in (
        (POST + b"Content-Length:   5  \r\n\r\nhello", {"received": 5}),  # OWS around the value
        (POST + b"Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", {"received": 5}),
        (POST + b"Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", {"received": 5}),
        (b"\r\n" + POST + b"Content-Length: 5\r\n\r\nhello", {"received": 5}),  # a leading empty line
        (b"POST /upload HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 1\r\n\r\nh", {"received": 1}),
        (b"POST /upload HTTP/1.1\r\nHost: my-svc.ns.svc.cluster.local:9080\r\nContent-Length: 0\r\n\r\n",
         {"received": 0}),
        (b"POST /upload HTTP/1.1\r\nHost:\r\nContent-Length: 0\r\n\r\n", {"received": 0}),  # empty Host
    ):
        s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
        try:
            s.sendall(data)
            out = b""
            while b"}" not in out:
                chunk = s.recv(65536)
                assert chunk, out
                out += chunk
        finally:
            s.close()
        assert out.startswith(b"HTTP/1.1 200 "), out[:300]
        assert json.loads(out.split(b"\r\n\r\n", 1)[1]) == expect


def test_unsupported_upgrade_is_refused(env: Env) -> None:
    """WebSocket is the upgrade Istio enables; any other is refused as Envoy does."""
    out = assert_refused(env, GET + b"Connection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n", 403)
    assert b"upgrade" not in out.split(b"\r\n\r\n")[0].lower().replace(b"connection: close", b"")


# --------------------------------------------------------------------------- pipelining and errors


def _read_all(s: socket.socket) -> tuple[bytes, bool]:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out, True
        except TimeoutError:
            return out, False
        if not chunk:
            return out, True
        out += chunk


@pytest.mark.parametrize("bad", [
    POST + b"Content-Length: 5x\r\n\r\nhello",
    POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00",
], ids=["bad-head", "bad-body", "garbage"])
def test_error_in_pipelined_request_does_not_cut_off_earlier_ones(env: Env, bad: bytes) -> None:
    s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    try:
        s.sendall(b"GET /delay/0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /anything?second HTTP/1.1\r\nHost: x\r\n\r\n" + bad)
        out, closed = _read_all(s)
    finally:
        s.close()
    responses = out.split(b"HTTP/1.1 ")[1:]
    assert [r[:3] for r in responses] == [b"200", b"200", b"400"], out[:1000]
    assert b'"delayed": 0.2' in responses[0] and b'"query": "second"' in responses[1]
    assert b"connection: close" not in responses[0].split(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in responses[2].lower()
    assert closed
    assert_serves(env)


# --------------------------------------------------------------------------- size limits


def test_oversized_request_line_default_limit(env: Env) -> None:
    assert_refused(env, b"GET /" + b"a" * (61 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431)


def test_oversized_headers_default_limit(env: Env) -> None:
    assert_refused(env, GET + b"X-Big: " + b"b" * (61 * 1024) + b"\r\n\r\n", 431)
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(700))  # ~75 KiB
    assert_refused(env, GET + many + b"\r\n", 431)
    # just under the limit is fine
    status, _, _ = request(env.port, "GET", "/get", {"X-Big": "b" * (50 * 1024)})
    assert status == 200


def test_oversized_headers_configured_limit(env: Env) -> None:
    with env.pushed(max_request_headers_kb=2):
        assert_refused(env, GET + b"X-Big: " + b"b" * 3000 + b"\r\n\r\n", 431)
        assert_refused(env, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431)
        status, _, _ = request(env.port, "GET", "/get", {"X-Big": "b" * 1000})
        assert status == 200


def test_headers_growing_past_the_limit_without_ending(env: Env) -> None:
    """A head that never ends is refused once it passes the limit, not buffered forever."""
    with env.pushed(max_request_headers_kb=2):
        s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
        try:
            s.sendall(GET + b"X-Slow: ")
            out = b""
            for _ in range(100):  # up to ~10 KiB, in pieces, never the final CRLF
                try:
                    s.sendall(b"z" * 100)
                except (BrokenPipeError, ConnectionResetError):
                    break
                if select.select([s], [], [], 0.01)[0]:
                    break
            out, closed = _read_all(s)
        finally:
            s.close()
        assert out.startswith(b"HTTP/1.1 431 "), out[:300]
        assert closed
        assert_serves(env)


def test_body_over_max_request_bytes_with_content_length(env: Env) -> None:
    with env.pushed(max_request_bytes=1000):
        before = env.px.stat(f"{env.prefix}.downstream_rq_too_large")
        # refused on the head alone: the client need not send the body
        assert_refused(env, POST + b"Content-Length: 1001\r\n\r\n", 413)
        assert env.px.stat(f"{env.prefix}.downstream_rq_too_large") == before + 1
        status, _, body = request(env.port, "POST", "/upload", body=b"k" * 1000)
        assert status == 200 and json.loads(body) == {"received": 1000}


def test_chunked_body_growing_over_max_request_bytes(env: Env) -> None:
    with env.pushed(max_request_bytes=1000):
        chunk = b"258\r\n" + b"k" * 600 + b"\r\n"
        assert_refused(env, POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunk + chunk + b"0\r\n\r\n",
                       413, forwarded=True)
        # exactly at the limit is fine
        s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
        try:
            s.sendall(POST + b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk
                      + b"190\r\n" + b"k" * 400 + b"\r\n0\r\n\r\n")
            out, closed = _read_all(s)
        finally:
            s.close()
        assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b'{"received": 1000}'), out[:300]


# --------------------------------------------------------------------------- slow and idle clients


def test_slow_request_headers_get_408(env: Env) -> None:
    with env.pushed(request_headers_timeout=0.5, idle_timeout=30):
        before = env.px.stat(f"{env.prefix}.downstream_rq_header_timeout")
        s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
        out, closed = b"", False
        try:
            s.sendall(b"GET /get HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            end = time.monotonic() + 8
            while time.monotonic() < end:  # a byte every 100 ms: never idle, never done
                if select.select([s], [], [], 0.1)[0]:
                    out, closed = _read_all(s)
                    break
                try:
                    s.sendall(b"z")
                except (BrokenPipeError, ConnectionResetError):
                    out, closed = _read_all(s)
                    break
        finally:
            s.close()
        assert out.startswith(b"HTTP/1.1 408 "), out[:300]
        assert b"connection: close" in out.lower()
        assert closed
        assert env.px.stat(f"{env.prefix}.downstream_rq_header_timeout") == before + 1
        assert_serves(env)


def test_idle_keepalive_connection_is_closed(env: Env) -> None:
    with env.pushed(idle_timeout=0.5):
        before = env.px.stat(f"{env.prefix}.downstream_cx_idle_timeout")
        s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
        try:
            s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n")
            out = b""
            while not out.endswith(b"x" * 10):
                out += s.recv(65536)
            assert out.startswith(b"HTTP/1.1 200 ")
            rest, closed = _read_all(s)  # nothing more is sent; the proxy closes the idle connection
        finally:
            s.close()
        assert rest == b"" and closed
        # a connection that never sends a byte is idle too
        rest, closed = raw_closed(env.port, b"", timeout=5)
        assert rest == b"" and closed
        assert env.px.stat(f"{env.prefix}.downstream_cx_idle_timeout") >= before + 2
        assert_serves(env)


def _reset(s: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the client is unambiguously gone."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_client_disconnect_mid_request_body_is_logged_dc(env: Env) -> None:
    s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    s.sendall(b"POST /upload?tag=dc-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"p" * 1000)
    time.sleep(0.2)
    s.close()
    line = env.wait_log("/upload?tag=dc-body")
    assert " DC " in line, line
    assert_serves(env)


def test_client_disconnect_while_waiting_for_response_is_logged_dc(env: Env) -> None:
    s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    s.sendall(b"GET /delay/1?tag=dc-wait HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    _reset(s)
    line = env.wait_log("/delay/1?tag=dc-wait")
    assert " DC " in line, line
    assert_serves(env)


def test_client_disconnect_mid_response_is_logged_dc(env: Env) -> None:
    s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /bytes/50000000?tag=dc-resp HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    time.sleep(0.2)
    _reset(s)
    line = env.wait_log("/bytes/50000000?tag=dc-resp")
    assert " DC " in line, line
    assert_serves(env)
