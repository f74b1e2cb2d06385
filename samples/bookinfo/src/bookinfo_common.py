"""What the four Bookinfo services share: a small HTTP server, an HTTP client, header forwarding.

Standard library only. Each service is a script in this directory (``python3 productpage.py``);
the script's directory is first on ``sys.path``, so ``import bookinfo_common`` finds this file.

Server: :class:`http.server.ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive, one log
line per request on stdout. It listens on ``--port`` / ``$PORT`` (default 9080; 0 picks a free
port) and ``--host`` / ``$BIND_ADDRESS`` (default all interfaces), and prints
``<service> listening on HOST:PORT`` once it is ready.

Client: :func:`http_get` calls a peer by URL (``http://reviews:9080/reviews/0``) with a timeout,
reusing idle keep-alive connections. When ``$HTTP_PROXY`` (or ``$http_proxy``) is set, every
call goes through that proxy in absolute form (``GET http://reviews:9080/reviews/0``), the way an
explicit-mode mesh expects; ``$NO_PROXY`` is deliberately ignored, so the peers' names can never
be excluded from the mesh by a stray setting.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DEFAULT_PORT = 9080

# Headers a service copies from the request it is serving onto every call it makes, so that the
# mesh can stitch one trace (and route on the user) across hops.
TRACE_HEADERS = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "baggage",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
)
# Application headers forwarded as well: the signed-in user (routing rules match on it), the
# caller's agent, and credentials (request-authentication tasks check them at every hop).
APP_HEADERS = ("end-user", "user-agent", "cookie", "authorization", "jwt")
FORWARD_HEADERS = TRACE_HEADERS + APP_HEADERS


def forward_headers(incoming: Mapping[str, str] | http.client.HTTPMessage) -> dict[str, str]:
    """The headers of ``incoming`` to copy onto an outbound call (lower-case names)."""
    out: dict[str, str] = {}
    for name in FORWARD_HEADERS:
        value = incoming.get(name)
        if value is not None:
            out[name] = value
    return out


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        sys.exit(f"${name} must be a number of seconds, not {raw!r}")


def peer_base_url(service: str) -> str:
    """``http://HOST:PORT`` of a peer: ``$<SERVICE>_HOSTNAME`` (default the service name, with
    ``.$SERVICES_DOMAIN`` appended when that is set) and ``$<SERVICE>_SERVICE_PORT`` (9080)."""
    key = service.upper()
    host = os.environ.get(f"{key}_HOSTNAME", "").strip()
    if not host:
        domain = os.environ.get("SERVICES_DOMAIN", "").strip().strip(".")
        host = f"{service}.{domain}" if domain else service
    port = os.environ.get(f"{key}_SERVICE_PORT", "").strip() or str(DEFAULT_PORT)
    if ":" in host and not host.startswith("["):  # a bare IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}"


# --------------------------------------------------------------------------------------------
# client


def _proxy_address() -> tuple[str, int] | None:
    raw = (os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy") or "").strip()
    if not raw:
        return None
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 80


class _Pool:
    """Idle keep-alive connections by (host, port)."""

    MAX_IDLE = 16

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def take(self, key: tuple[str, int]) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def give(self, key: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.MAX_IDLE:
                idle.append(conn)
                return
        conn.close()


_POOL = _Pool()


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def http_get(url: str, headers: Mapping[str, str], timeout: float) -> Response:
    """GET ``url``; raises ``OSError`` (refused, reset, timed out...) or ``http.client`` errors.

    ``timeout`` bounds connecting and each wait for data, like the clients of Istio's services.
    """
    parts = urlsplit(url)
    proxy = _proxy_address()
    if proxy is not None:
        key, target = proxy, url  # absolute form; http.client derives Host from it
    else:
        key = (parts.hostname or "", parts.port or 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
    for attempt in (1, 2):
        conn = _POOL.take(key) if attempt == 1 else None
        reused = conn is not None
        if conn is None:
            conn = http.client.HTTPConnection(key[0], key[1], timeout=timeout)
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("GET", target, headers=dict(headers))
            resp = conn.getresponse()
            body = resp.read()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            conn.close()
            if reused:  # the peer closed an idle connection: try once on a new one
                continue
            raise
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            _POOL.give(key, conn)
        return Response(resp.status, resp.headers, body)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# server

_LOG_LOCK = threading.Lock()


def log(line: str) -> None:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    with _LOG_LOCK:
        sys.stdout.write(f"{stamp} {line}\n")
        sys.stdout.flush()


class Reply:
    """What a route answers: status, body, extra headers."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes, content_type: str,
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def json_reply(obj, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj).encode(), "application/json")


def html_reply(text: str, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, text.encode("utf-8"), "text/html; charset=utf-8", headers)


def redirect_reply(location: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(302, b"", "text/plain", [("Location", location), *(headers or [])])


class Handler(BaseHTTPRequestHandler):
    """Dispatches every method to :meth:`route`; subclasses implement it.

    ``route(method, path, query)`` returns a :class:`Reply` (``None`` means 404). The request
    body, if any, is in ``self.body`` (bytes) when ``route`` runs.
    """

    protocol_version = "HTTP/1.1"
    server_version = "bookinfo"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    service = "bookinfo"

    def route(self, method: str, path: str, query: str) -> Reply | None:  # pragma: no cover
        raise NotImplementedError

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        started = time.monotonic()
        method = self.command
        try:
            self.body = self._read_body()
        except ValueError:
            self.send_error(400, "bad request body")
            return
        path, _, query = self.path.partition("?")
        if "://" in path:  # absolute form (a client talking to us as if we were a proxy)
            path = urlsplit(path).path or "/"
        try:
            reply = self.route("GET" if method == "HEAD" else method, path, query)
        except Exception as e:  # a bug: answer 500 rather than dropping the connection
            log(f"{self.service} error handling {method} {self.path}: {e!r}")
            reply = json_reply({"error": "internal error"}, 500)
        if reply is None:
            reply = json_reply({"error": f"not found: {path}"}, 404)
        head = [f"{self.protocol_version} {reply.status} {self.responses.get(reply.status, ('',))[0]}",
                f"Date: {self.date_time_string()}",
                f"Content-Type: {reply.content_type}",
                f"Content-Length: {len(reply.body)}"]
        head += [f"{name}: {value}" for name, value in reply.headers]
        if self.close_connection:
            head.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            head.append("Connection: keep-alive")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(data + reply.body if method != "HEAD" else data)  # one write: no Nagle stall
        elapsed = (time.monotonic() - started) * 1000
        extra = "".join(
            f" {name}={self.headers[name]}"
            for name in ("x-request-id", "end-user")
            if self.headers.get(name)
        )
        log(f'{self.service} {self.client_address[0]} "{method} {self.path} {self.request_version}" '
            f"{reply.status} {len(reply.body)} {elapsed:.1f}ms{extra}")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def log_message(self, format: str, *args) -> None:
        log(f"{self.service} {self.address_string()} {format % args}")


def serve(service: str, handler: type[Handler], args: argparse.Namespace,
          on_start: Callable[[], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT. ``args`` carries ``host`` and ``port`` (see :func:`arg_parser`)."""
    handler.service = service
    host = args.host if args.host is not None else os.environ.get("BIND_ADDRESS", "0.0.0.0")
    port = args.port if args.port is not None else int(os.environ.get("PORT") or DEFAULT_PORT)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if on_start:
        on_start()
    bound = server.server_address
    log(f"{service} listening on {bound[0]}:{bound[1]}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def arg_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, default=None,
                   help=f"port to listen on (default $PORT, else {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--host", default=None,
                   help="address to listen on (default $BIND_ADDRESS, else 0.0.0.0)")
    return p
