"""HTTP/1.1 proxying, done properly: real client sockets -> a real ``pilotfish proxy`` process
-> real upstream processes (samples/httpbin) and a canned-response upstream in this process.

One proxy and its upstreams serve the whole module; tests that need other settings push a
configuration and put the base one back.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from proxyutil import ProxyProcess, Upstream, free_port, request, simple_config

GIB = 1 << 30
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# --------------------------------------------------------------------------- helpers


class RawConn:
    """A client connection that reads HTTP/1.1 responses byte-exactly (no library magic)."""

    def __init__(self, port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_head(self) -> tuple[int, str, dict[str, list[str]]]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed before a response head: {self.buf[:200]!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        # a response starts right here: stray body bytes before it would be a framing bug
        assert head.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), head[:200]
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = (lines[0].split(" ", 2) + [""])[:3]
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            n, _, v = line.partition(":")
            headers.setdefault(n.strip().lower(), []).append(v.strip())
        return int(status), version, headers

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed mid-body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed mid-chunk")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_chunked(self) -> bytes:
        out = []
        while True:
            size = int(self.read_line().split(b";")[0], 16)
            if size == 0:
                while self.read_line():  # trailers, then the empty line
                    pass
                return b"".join(out)
            out.append(self.read_exact(size))
            assert self.read_line() == b"", "chunk data not followed by CRLF"

    def read_to_close(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def read_response(self, head_only: bool = False) -> tuple[int, dict[str, list[str]], bytes]:
        """One final response, framed as RFC 9112 section 6.3 says (1xx heads are skipped)."""
        while True:
            status, _, headers = self.read_head()
            if status >= 200:
                break
        if head_only or status in (204, 304):
            return status, headers, b""
        if "transfer-encoding" in headers:
            assert headers["transfer-encoding"] == ["chunked"], headers
            assert "content-length" not in headers, headers
            return status, headers, self.read_chunked()
        if "content-length" in headers:
            assert len(headers["content-length"]) == 1, headers
            return status, headers, self.read_exact(int(headers["content-length"][0]))
        return status, headers, self.read_to_close()

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True when the peer closes (EOF or reset) with no further bytes."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        assert data == b"", f"unexpected bytes: {data[:200]!r}"
        return True

    def close(self) -> None:
        self.sock.close()


class CannedUpstream:
    """A real HTTP/1.1 server (thread, sockets) answering each request with the raw bytes
    registered for its path; it records every request head it receives."""

    def __init__(self, responses: dict[str, bytes]) -> None:
        self.responses = responses
        self.heads: list[bytes] = []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.heads.append(head)
                line = re.match(rb"(GET|HEAD|POST|PUT) (/\S*) HTTP/1\.[01]\r\n", head + b"\r\n")
                if line is None:  # not a request: the stream is out of step
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 6\r\n\r\ndesync")
                    return
                path = line.group(2).decode("latin-1").split("?")[0]
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
                # "/early...": answer at once, without reading the request body
                need = int(m.group(1)) if m and not path.startswith("/early") else 0
                while len(buf) < need:
                    buf += c.recv(65536)
                buf = buf[need:]
                resp = self.responses.get(path, b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                c.sendall(resp)
                if b"connection: close" in resp.lower() or resp.startswith(b"HTTP/1.0"):
                    return
        except OSError:
            return
        finally:
            c.close()

    def stop(self) -> None:
        self.stopped = True
        self.lsock.close()


CANNED = {
    # hop-by-hop headers in a response, including one named by Connection
    "/hop": (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
             b"Proxy-Connection: keep-alive\r\nX-Hop: secret\r\nUpgrade: foo\r\nTrailer: X-T\r\n"
             b"X-Keep: 1\r\nContent-Length: 2\r\n\r\nok"),
    # a 304 that announces the length of the representation: no body follows
    "/304cl": b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n",
    # an interim 100 Continue the client did not ask for, then the final response
    "/interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nfin",
    # HTTP/1.0 upstream without length: delimited by close
    "/http10": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold-school",
    # malformed responses (upstream-side smuggling shapes and protocol violations)
    "/bad/cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "/bad/dup-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "/bad/te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabc",
    "/bad/nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "/bad/status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
    "/bad/101": b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    # an early answer, before the request body is read; the connection stays open
    "/early": b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!",
    "/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    # a body cut by a malformed chunk after the response started
    "/bad/chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n",
}


def _echo(port: int, path: str = "/anything", headers: dict | None = None) -> dict:
    status, h, body = request(port, "GET", path, headers)
    assert status == 200, (status, body[:200])
    return json.loads(body)


# --------------------------------------------------------------------------- fixtures


class Env:
    def __init__(self, tmp) -> None:
        self.a = Upstream("a")
        self.b = Upstream("b")
        self.c = Upstream("c")
        self.canned = CannedUpstream(CANNED)
        self.port = free_port()
        self.version = 1
        self.base = self.config()
        self.px = ProxyProcess(self.base, tmp, "http1")

    def config(self, **http_opts) -> dict:
        def vh(name: str, domains: list[str], cluster: str) -> dict:
            return {"name": name, "domains": domains, "routes": [
                {"name": name, "match": {"uri": {"prefix": "/"}}, "route": {"clusters": [{"cluster": cluster}]}}]}

        return simple_config(
            self.port,
            {"a": [self.a.port], "b": [self.b.port], "c": [self.c.port], "canned": [self.canned.port]},
            version=str(self.version),
            http_opts={"use_remote_address": True, **http_opts},
            virtual_hosts=[
                vh("exact", ["exact.example.com"], "b"),
                vh("wildcard", ["*.example.com"], "c"),
                vh("canned", ["canned.test"], "canned"),
                vh("default", ["*"], "a"),
            ],
        )

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

    def stop(self) -> None:
        self.px.stop()
        for u in (self.a, self.b, self.c):
            u.stop()
        self.canned.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("http1"))
    try:
        yield e
    finally:
        e.stop()


# --------------------------------------------------------------------------- keep-alive, pooling


def test_keepalive_both_sides_pools_upstream_connections(env: Env) -> None:
    px = env.px
    cx0, rq0 = px.stat("cluster.a.upstream_cx_total"), px.stat("cluster.a.upstream_rq_total")
    down0 = px.stat(f"http.0.0.0.0_{env.port}.downstream_cx_total")
    c = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
    try:
        for i in range(50):
            c.request("GET", f"/anything?i={i}")
            r = c.getresponse()
            body = json.loads(r.read())
            assert r.status == 200 and body["upstream"] == "a" and body["query"] == f"i={i}"
            assert r.getheader("connection") is None  # HTTP/1.1 keep-alive is the default
            assert not r.will_close
    finally:
        c.close()
    # ... and sequential client connections reuse the pooled upstream connection too
    for _ in range(10):
        assert request(env.port, "GET", "/get")[0] == 200
    stats = px.stats()
    assert stats["cluster.a.upstream_rq_total"] - rq0 == 60
    assert stats["cluster.a.upstream_cx_total"] - cx0 <= 2
    assert stats[f"http.0.0.0.0_{env.port}.downstream_cx_total"] - down0 == 11


# --------------------------------------------------------------------------- bodies both ways


def test_request_content_length_body_streamed(env: Env) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    status, _, resp = request(env.port, "POST", "/upload", body=body)
    assert status == 200 and json.loads(resp) == {"received": len(body)}


def test_request_chunked_body_reaches_upstream_with_right_length(env: Env) -> None:
    sizes = [1, 10, 0x1000, 65536, 3, 200000]
    chunks = b"".join(f"{n:x}\r\n".encode() + b"q" * n + b"\r\n" for n in sizes)
    c = RawConn(env.port)
    try:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
               + b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")
        status, _, body = c.read_response()
        assert status == 200 and json.loads(body) == {"received": sum(sizes) + 5}
        # the upstream sees a chunked request (length unknown up front), not both framings
        c.send(b"POST /anything HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\nwiki\r\n0\r\n\r\n")
        status, _, body = c.read_response()
        echo = json.loads(body)
        assert status == 200 and echo["body_length"] == 4
        assert echo["headers"].get("transfer-encoding") == "chunked"
        assert "content-length" not in echo["headers"]
    finally:
        c.close()


def test_response_chunked_streamed(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET /stream/25 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = c.read_response()
        assert status == 200
        assert headers["transfer-encoding"] == ["chunked"]
        assert body == b"".join(f"chunk {i}\n".encode() for i in range(25))
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
    finally:
        c.close()


def test_close_delimited_response_is_chunked_for_http11_clients(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET /nolength/100000 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = c.read_response()
        assert status == 200
        assert headers["transfer-encoding"] == ["chunked"]
        assert "connection" not in headers  # the upstream's "connection: close" is hop-by-hop
        assert body == b"y" * 100000
        # the client connection stays usable
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
    finally:
        c.close()


def test_close_delimited_and_chunked_responses_to_http10_client(env: Env) -> None:
    for path, expect in ((b"/nolength/5000", b"y" * 5000),
                         (b"/stream/3", b"chunk 0\nchunk 1\nchunk 2\n")):
        c = RawConn(env.port)
        try:
            c.send(b"GET " + path + b" HTTP/1.0\r\nHost: x\r\n\r\n")
            status, headers, body = c.read_response()
            assert status == 200
            assert "transfer-encoding" not in headers  # HTTP/1.0 has no chunked coding
            assert body == expect  # delimited by the close
        finally:
            c.close()


# --------------------------------------------------------------------------- backpressure


class RssSampler:
    def __init__(self, px: ProxyProcess) -> None:
        self.px = px
        self.peak = px.rss_kb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.px.rss_kb())

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.px.rss_kb())
        return self.peak


def test_1gib_upload_streams_with_bounded_memory(env: Env) -> None:
    def body() -> Iterator[bytes]:
        block = b"u" * (1 << 20)
        for _ in range(GIB // len(block)):
            yield block

    sampler = RssSampler(env.px)
    c = RawConn(env.port, timeout=60)
    try:
        c.send(f"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n".encode())
        for block in body():
            c.send(block)
        status, _, resp = c.read_response()
    finally:
        c.close()
        peak_kb = sampler.stop()
    assert status == 200 and json.loads(resp) == {"received": GIB}
    assert peak_kb < 150 * 1024, f"proxy RSS reached {peak_kb // 1024} MiB during a 1 GiB upload"


def test_chunked_upload_streams_with_bounded_memory(env: Env) -> None:
    total = 256 << 20
    sampler = RssSampler(env.px)
    c = RawConn(env.port, timeout=60)
    try:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = b"c" * (1 << 20)
        framed = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        for _ in range(total // len(block)):
            c.send(framed)
        c.send(b"0\r\n\r\n")
        status, _, resp = c.read_response()
    finally:
        c.close()
        peak_kb = sampler.stop()
    assert status == 200 and json.loads(resp) == {"received": total}
    assert peak_kb < 150 * 1024, f"proxy RSS reached {peak_kb // 1024} MiB"


def test_large_download_to_slow_reader_keeps_memory_bounded(env: Env) -> None:
    size = 200_000_000
    base_kb = env.px.rss_kb()
    sampler = RssSampler(env.px)
    c = RawConn(env.port, timeout=30, rcvbuf=64 * 1024)
    try:
        c.send(f"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, headers = c.read_head()
        assert status == 200 and headers["content-length"] == [str(size)]
        time.sleep(1.5)  # not reading: the upstream must be held back, not buffered
        stalled_kb = env.px.rss_kb()
        got = len(c.buf)
        while got < size:
            chunk = c.sock.recv(1 << 16)  # a modest reader
            assert chunk, f"closed after {got} bytes"
            got += len(chunk)
        assert got == size
        c.buf = b""
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
    finally:
        c.close()
        peak_kb = sampler.stop()
    assert stalled_kb - base_kb < 48 * 1024, f"proxy buffered {(stalled_kb - base_kb) // 1024} MiB"
    assert peak_kb < 150 * 1024, f"proxy RSS reached {peak_kb // 1024} MiB"


# --------------------------------------------------------------------------- expect, HEAD, 204/304


def test_expect_100_continue(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"POST /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        status, _, headers = c.read_head()  # before any body byte is sent
        assert status == 100 and headers == {}
        c.send(b"hello")
        status, _, body = c.read_response()
        echo = json.loads(body)
        assert status == 200 and echo["body_length"] == 5
        assert "expect" not in echo["headers"]  # the proxy answered it; the upstream never sees it
        # and the connection carries on
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
    finally:
        c.close()


def test_head_response_has_no_body(env: Env) -> None:
    c = RawConn(env.port)
    try:
        for path in (b"/bytes/1000", b"/stream/4"):
            c.send(b"HEAD " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, headers = c.read_head()
            assert status == 200
            if path == b"/bytes/1000":
                assert headers["content-length"] == ["1000"]
            # no body bytes: the next response starts right after the head
            c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 200")
            status, _, body = c.read_response()
            assert status == 200 and json.loads(body)["method"] == "GET"
    finally:
        c.close()


@pytest.mark.parametrize("code", [204, 304])
def test_204_and_304_have_no_body(env: Env, code: int) -> None:
    c = RawConn(env.port)
    try:
        c.send(f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, headers = c.read_head()
        assert status == code
        assert "transfer-encoding" not in headers
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = c.read_response()
        assert status == 200 and json.loads(body)["path"] == "/get"
    finally:
        c.close()


def test_upstream_304_with_content_length_does_not_wait_for_a_body(env: Env) -> None:
    c = RawConn(env.port, timeout=5)
    try:
        c.send(b"GET /304cl HTTP/1.1\r\nHost: canned.test\r\n\r\n")
        status, _, headers = c.read_head()
        assert status == 304 and headers["etag"] == ['"v1"']
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 200")
        assert c.read_response()[0] == 200
    finally:
        c.close()


def test_unsolicited_upstream_100_continue_is_swallowed(env: Env) -> None:
    c = RawConn(env.port, timeout=5)
    try:
        c.send(b"GET /interim HTTP/1.1\r\nHost: canned.test\r\n\r\n")
        status, _, headers = c.read_head()
        assert status == 200
        assert c.read_exact(3) == b"fin"
    finally:
        c.close()


def test_http10_upstream_response_is_rechunked(env: Env) -> None:
    c = RawConn(env.port, timeout=5)
    try:
        c.send(b"GET /http10 HTTP/1.1\r\nHost: canned.test\r\n\r\n")
        status, headers, body = c.read_response()
        assert status == 200 and body == b"old-school"
        assert headers["transfer-encoding"] == ["chunked"]
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
    finally:
        c.close()


# --------------------------------------------------------------------------- headers


def test_hop_by_hop_request_headers_removed(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET /anything HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\n"
               b"Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: foo/2\r\nProxy-Connection: keep-alive\r\n"
               b"X-Hop: secret\r\nX-Keep: yes\r\n\r\n")
        status, _, body = c.read_response()
        assert status == 200
        got = json.loads(body)["headers"]
        for name in ("connection", "keep-alive", "te", "upgrade", "proxy-connection", "x-hop"):
            assert name not in got, (name, got)
        assert got["x-keep"] == "yes"
    finally:
        c.close()


def test_h2c_upgrade_request_is_answered_in_http11(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET /anything HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        status, _, body = c.read_response()
        assert status == 200
        got = json.loads(body)["headers"]
        for name in ("connection", "upgrade", "http2-settings"):
            assert name not in got, (name, got)
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
    finally:
        c.close()


WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's example key and its accept value
WS_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
WS_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_websocket_upgrade_then_bytes_pass_both_ways(env: Env) -> None:
    """Istio enables WebSocket upgrades: the 101 comes back with the upstream's handshake,
    then the session's bytes pass both ways unchanged (the upstream echoes them)."""
    c = RawConn(env.port)
    try:
        c.send(WS_UPGRADE)
        status, _, headers = c.read_head()
        assert status == 101, headers
        assert headers["upgrade"] == ["websocket"] and headers["connection"] == ["upgrade"]
        assert headers["sec-websocket-accept"] == [WS_ACCEPT]  # the upstream's handshake, untouched
        assert headers["x-upstream"] == ["a"] and "content-length" not in headers
        for message in (b"\x81\x05hello", bytes(range(256)) * 400, b"GET / HTTP/1.1\r\n\r\n"):
            c.send(message)  # bytes after the upgrade are not HTTP any more, even when they look so
            assert c.read_exact(len(message)) == message
    finally:
        c.close()
    end = time.monotonic() + 5
    while True:  # the line is written once the proxy has seen the close (and a batch is due)
        lines = [ln for ln in env.px.access_lines(wait_for=1) if '"GET /ws HTTP/1.1" 101' in ln]
        if lines or time.monotonic() > end:
            break
        time.sleep(0.05)
    assert lines, "no access log line for the WebSocket session"
    assert " - via_upstream " in lines[-1]  # no DC flag: the client ending the session is normal


def test_websocket_client_half_close_ends_the_session(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(WS_UPGRADE)
        assert c.read_head()[0] == 101
        c.send(b"ping")
        assert c.read_exact(4) == b"ping"
        c.sock.shutdown(socket.SHUT_WR)  # the client ends its side: the proxy ends both
        assert c.is_closed()
    finally:
        c.close()


def test_websocket_session_has_backpressure_both_ways(env: Env) -> None:
    """A client that sends 32 MiB and does not read: the echo fills the way back, the proxy
    stops reading each side in turn, and its memory stays bounded; then everything arrives."""
    total = 32 << 20
    c = RawConn(env.port, timeout=30, rcvbuf=64 * 1024)
    try:
        c.send(WS_UPGRADE)
        assert c.read_head()[0] == 101
        sent = threading.Thread(target=lambda: c.sock.sendall(b"w" * total), daemon=True)
        sent.start()
        time.sleep(1.5)  # nothing read: both directions fill up and pause
        assert sent.is_alive(), "32 MiB went through without the client reading: no backpressure"
        assert env.px.rss_kb() < 150 * 1024
        got = len(c.buf)
        c.buf = b""
        while got < total:
            chunk = c.sock.recv(1 << 20)
            assert chunk, f"closed after {got} bytes"
            got += len(chunk)
        sent.join(10)
        assert got == total and not sent.is_alive()
    finally:
        c.close()


def test_websocket_upgrade_refused_by_the_upstream_is_an_ordinary_response(env: Env) -> None:
    """An upstream that does not switch answers normally; the connection then closes (the
    client may have sent bytes meant for the upgraded protocol)."""
    c = RawConn(env.port)
    try:
        c.send(WS_UPGRADE.replace(b"/ws", b"/status/426"))
        status, headers, _ = c.read_response()
        assert status == 426 and headers["connection"] == ["close"]
        assert c.is_closed()
    finally:
        c.close()


def test_hop_by_hop_response_headers_removed(env: Env) -> None:
    c = RawConn(env.port, timeout=5)
    try:
        c.send(b"GET /hop HTTP/1.1\r\nHost: canned.test\r\n\r\n")
        status, headers, body = c.read_response()
        assert status == 200 and body == b"ok"
        for name in ("connection", "keep-alive", "proxy-connection", "upgrade", "trailer", "x-hop"):
            assert name not in headers, (name, headers)
        assert headers["x-keep"] == ["1"]
        assert headers["server"] == ["istio-envoy"]
    finally:
        c.close()


def test_forwarded_headers_with_use_remote_address(env: Env) -> None:
    got = _echo(env.port)["headers"]
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    got = _echo(env.port, headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})["headers"]
    assert got["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"  # the edge proxy says how the client connected


def test_forwarded_headers_without_use_remote_address(env: Env) -> None:
    with env.pushed(use_remote_address=False):
        got = _echo(env.port, headers={"X-Forwarded-For": "203.0.113.7"})["headers"]
        assert got["x-forwarded-for"] == "203.0.113.7"
        assert got["x-forwarded-proto"] == "http"


def test_request_id_generated_when_absent_and_kept_when_present(env: Env) -> None:
    ids = {_echo(env.port)["headers"]["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(UUID_RE.match(i) for i in ids), ids
    got = _echo(env.port, headers={"X-Request-Id": "my-own-id"})["headers"]
    assert got["x-request-id"] == "my-own-id"


# --------------------------------------------------------------------------- virtual hosts


@pytest.mark.parametrize("host,upstream", [
    ("exact.example.com", "b"),
    ("EXACT.Example.com", "b"),
    ("exact.example.com:80", "b"),
    ("foo.example.com", "c"),
    ("a.b.example.com", "c"),
    ("example.com", "a"),
    ("other.test", "a"),
])
def test_virtual_host_by_authority(env: Env, host: str, upstream: str) -> None:
    echo = _echo(env.port, headers={"Host": host})
    assert echo["upstream"] == upstream
    assert echo["headers"]["host"] == host


def test_absolute_form_target_sets_authority(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET http://exact.example.com/anything?x=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
        status, _, body = c.read_response()
        echo = json.loads(body)
        assert status == 200 and echo["upstream"] == "b"
        assert echo["path"] == "/anything" and echo["query"] == "x=1"
        assert echo["headers"]["host"] == "exact.example.com"
        c.send(b"GET http://foo.example.com HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
        status, _, body = c.read_response()
        echo = json.loads(body)
        assert status == 200 and echo["upstream"] == "c" and echo["path"] == "/"
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: exact.example.com\r\n\r\n")  # asterisk-form
        status, _, body = c.read_response()
        echo = json.loads(body)
        assert status == 200 and echo["method"] == "OPTIONS" and echo["path"] == "*"
    finally:
        c.close()


# --------------------------------------------------------------------------- HTTP/1.0, pipelining


def test_http10_client_without_keepalive_gets_close(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET /anything HTTP/1.0\r\nHost: x\r\n\r\n")
        status, headers, body = c.read_response()
        assert status == 200 and json.loads(body)["method"] == "GET"
        assert headers.get("connection") == ["close"]
        assert c.is_closed()
    finally:
        c.close()


def test_http10_client_without_host_is_served(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET /anything HTTP/1.0\r\n\r\n")
        status, _, body = c.read_response()
        assert status == 200 and json.loads(body)["upstream"] == "a"
    finally:
        c.close()


def test_http10_client_with_keepalive(env: Env) -> None:
    c = RawConn(env.port)
    try:
        for i in range(3):
            c.send(f"GET /anything?i={i} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n".encode())
            status, headers, body = c.read_response()
            assert status == 200 and json.loads(body)["query"] == f"i={i}"
            assert headers.get("connection") == ["keep-alive"]
            assert "content-length" in headers
    finally:
        c.close()


def test_pipelined_requests_answered_in_order(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET /delay/0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /anything?i=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
               b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
               b"GET /anything?i=3 HTTP/1.1\r\nHost: exact.example.com\r\n\r\n")
        s0, _, b0 = c.read_response()
        s1, _, b1 = c.read_response()
        s2, _, b2 = c.read_response()
        s3, _, b3 = c.read_response()
        assert (s0, s1, s2, s3) == (200, 200, 200, 200)
        assert json.loads(b0) == {"delayed": 0.3}
        assert json.loads(b1)["query"] == "i=1" and json.loads(b1)["body_length"] == 3
        assert json.loads(b2) == {"received": 2}
        assert json.loads(b3)["query"] == "i=3" and json.loads(b3)["upstream"] == "b"
    finally:
        c.close()


def test_pipelined_request_after_connection_close_is_not_served(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"GET /anything?i=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
               b"GET /anything?i=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = c.read_response()
        assert status == 200 and json.loads(body)["query"] == "i=0"
        assert headers.get("connection") == ["close"]
        assert c.is_closed()
    finally:
        c.close()


def test_many_pipelined_requests(env: Env) -> None:
    c = RawConn(env.port)
    try:
        c.send(b"".join(f"GET /anything?i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(100)))
        for i in range(100):
            status, _, body = c.read_response()
            assert status == 200 and json.loads(body)["query"] == f"i={i}"
    finally:
        c.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_pipelined_large_bodies_behind_a_slow_request(env: Env, chunked: bool) -> None:
    """Bodies of requests queued behind a slow one are held back (reading pauses) and
    reading resumes when their turn comes."""
    n = 400 * 1024
    if chunked:
        body = b"".join(b"1000\r\n" + b"b" * 4096 + b"\r\n" for _ in range(n // 4096)) + b"0\r\n\r\n"
        framing = b"Transfer-Encoding: chunked\r\n"
    else:
        body = b"b" * n
        framing = b"Content-Length: %d\r\n" % n
    req = b"POST /upload HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + body
    c = RawConn(env.port, timeout=10)
    try:
        c.send(b"GET /delay/0.3 HTTP/1.1\r\nHost: x\r\n\r\n" + req + req + b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
        for _ in range(2):
            status, _, resp = c.read_response()
            assert status == 200 and json.loads(resp) == {"received": n}
        assert c.read_response()[0] == 200
    finally:
        c.close()


# --------------------------------------------------------------------------- malformed upstream


def _wait_log(px: ProxyProcess, needle: str, timeout: float = 5.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in px.access_lines(0, 0.1):
            if needle in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no access log line with {needle!r}")


@pytest.mark.parametrize("case", ["cl-te", "dup-cl", "te-gzip", "nul", "status", "101"])
def test_malformed_upstream_response_is_a_502_upe(env: Env, case: str) -> None:
    """Envoy answers an upstream HTTP protocol error with 502, flag UPE, details
    upstream_reset_before_response_started{protocol_error}; nothing of the bad response is
    forwarded and the client connection stays usable."""
    c = RawConn(env.port, timeout=5)
    try:
        c.send(f"GET /bad/{case}?t={case} HTTP/1.1\r\nHost: canned.test\r\n\r\n".encode())
        status, headers, body = c.read_response()
        assert status == 502, (status, headers, body)
        assert b"protocol error" in body
        c.send(b"GET /get HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response()[0] == 200
    finally:
        c.close()
    line = _wait_log(env.px, f"/bad/{case}?t={case}")
    assert " 502 UPE upstream_reset_before_response_started{protocol_error} " in line, line


def test_malformed_chunk_after_response_started_cuts_the_response(env: Env) -> None:
    c = RawConn(env.port, timeout=5)
    try:
        c.send(b"GET /bad/chunk HTTP/1.1\r\nHost: canned.test\r\n\r\n")
        status, _, headers = c.read_head()
        assert status == 200 and headers["transfer-encoding"] == ["chunked"]
        with pytest.raises(EOFError):
            c.read_chunked()  # never a clean last chunk: the client sees the truncation
    finally:
        c.close()
    assert request(env.port, "GET", "/get")[0] == 200


def test_early_upstream_response_before_request_body_ends(env: Env) -> None:
    """An upstream that answers before it has read the request body (an early 413) must not
    get the connection back in the pool: the rest of the body would be read as the next
    request on it (a desync). The client's connection closes for the same reason."""
    c = RawConn(env.port, timeout=5)
    try:
        c.send(b"POST /early HTTP/1.1\r\nHost: canned.test\r\nContent-Length: 100000\r\n\r\n" + b"e" * 1000)
        status, _, body = c.read_response()
        assert status == 413 and body == b"big!"
        assert c.is_closed()  # the rest of the request cannot be skipped safely
    finally:
        c.close()
    time.sleep(0.2)
    for _ in range(3):
        status, _, body = request(env.port, "GET", "/ok", {"Host": "canned.test"})
        assert (status, body) == (200, b"ok")
