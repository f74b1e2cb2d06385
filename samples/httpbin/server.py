#!/usr/bin/env python3
"""A small httpbin-like upstream, standard library only, for the standalone demo and tests.

  /status/CODE          answer with that status
  /delay/SECONDS        wait, then answer 200
  /bytes/N              N bytes of body (Content-Length)
  /stream/N             N chunks (chunked)
  /nolength/N           N bytes, delimited by closing the connection
  /upload               read the whole request body, answer {"received": bytes}
  /close                close the connection without answering
  /closemid             promise 100 bytes, send 10, close
  /flaky/N?key=K        the first N requests with key K answer 503, then 200
  /ws                   a WebSocket upgrade (101 with Sec-WebSocket-Accept), then every byte
                        received is echoed back raw until the client closes
  /_log                 the last 100 requests seen (method, path, host, headers), as JSON
  /headers, /anything, anything else: echo the request as JSON

Every response carries ``x-upstream: NAME`` (``--name``) so tests can tell instances apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections import deque

REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 404: "Not Found", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Upstream:
    def __init__(self, name: str, fail_status: int = 0) -> None:
        self.name = name
        self.fail_status = fail_status
        self.flaky: dict[str, int] = {}
        self.requests = 0
        self.log: deque[dict] = deque(maxlen=100)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                except ValueError:
                    return
                headers: list[tuple[str, str]] = []
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers.append((k.strip().lower(), v.strip()))
                hd = dict(headers)
                self.requests += 1
                keep = await self.respond(reader, writer, method, target, version, hd, headers)
                await writer.drain()
                if not keep or hd.get("connection", "").lower() == "close" or version == "HTTP/1.0":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def read_body(self, reader: asyncio.StreamReader, hd: dict[str, str]) -> int:
        """Consume the request body without keeping it; return its size."""
        total = 0
        if hd.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                left = size
                while left:
                    chunk = await reader.read(min(left, 1 << 16))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(chunk)
                total += size
                await reader.readline()
        n = int(hd.get("content-length", "0") or 0)
        left = n
        while left:
            chunk = await reader.read(min(left, 1 << 16))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
        return n

    def head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"x-upstream: {self.name}"]
        lines += [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def respond(self, reader, writer, method, target, version, hd, headers) -> bool:
        path, _, query = target.partition("?")
        parts = path.strip("/").split("/")
        if hd.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body_len = await self.read_body(reader, hd)
        head_only = method == "HEAD"
        if path != "/_log":
            self.log.append({"method": method, "path": path, "query": query, "host": hd.get("host"),
                             "headers": hd, "body_length": body_len})

        def send(status: int, body: bytes = b"", ctype: str = "application/json", extra=()) -> None:
            hs = [("content-type", ctype), ("content-length", str(len(body))), *extra]
            writer.write(self.head(status, hs) + (b"" if head_only or status in (204, 304) else body))

        if path == "/ws" and hd.get("upgrade", "").lower() == "websocket":
            import base64
            import hashlib

            key = hd.get("sec-websocket-key", "")
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            writer.write(f"HTTP/1.1 101 Switching Protocols\r\nx-upstream: {self.name}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept.decode()}\r\n\r\n".encode())
            while True:
                data = await reader.read(65536)
                if not data:
                    return False
                writer.write(data)
                await writer.drain()
        if self.fail_status and path != "/_log":
            send(self.fail_status, b'{"failing": true}')
        elif path == "/_log":
            send(200, json.dumps(list(self.log)).encode())
        elif parts[0] == "status" and len(parts) > 1:
            send(int(parts[1]))
        elif parts[0] == "delay" and len(parts) > 1:
            await asyncio.sleep(float(parts[1]))
            send(200, json.dumps({"delayed": float(parts[1])}).encode())
        elif parts[0] == "bytes" and len(parts) > 1:
            send(200, b"x" * int(parts[1]), "application/octet-stream")
        elif parts[0] == "stream" and len(parts) > 1:
            writer.write(self.head(200, [("content-type", "text/plain"), ("transfer-encoding", "chunked")]))
            if not head_only:
                for i in range(int(parts[1])):
                    data = f"chunk {i}\n".encode()
                    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
        elif parts[0] == "nolength" and len(parts) > 1:
            writer.write(self.head(200, [("content-type", "text/plain"), ("connection", "close")]))
            writer.write(b"y" * int(parts[1]))
            await writer.drain()
            return False
        elif parts[0] == "upload":
            send(200, json.dumps({"received": body_len}).encode())
        elif parts[0] == "close":
            writer.transport.abort()
            return False
        elif parts[0] == "closemid":
            writer.write(self.head(200, [("content-length", "100")]) + b"z" * 10)
            await writer.drain()
            writer.transport.abort()
            return False
        elif parts[0] == "flaky" and len(parts) > 1:
            key = query or "default"
            seen = self.flaky.get(key, 0)
            self.flaky[key] = seen + 1
            send(503 if seen < int(parts[1]) else 200, json.dumps({"attempt": seen + 1}).encode())
        else:
            echo = {"method": method, "path": path, "query": query, "version": version,
                    "headers": dict(headers), "body_length": body_len, "upstream": self.name}
            send(200, json.dumps(echo).encode())
        return True


async def serve(host: str, port: int, name: str, ready_fd: int | None = None, fail_status: int = 0) -> None:
    up = Upstream(name, fail_status)
    server = await asyncio.start_server(up.handle, host, port, limit=1 << 20)
    actual = server.sockets[0].getsockname()[1]
    print(f"httpbin {name} listening on {host}:{actual}", flush=True)
    if ready_fd is not None:
        os.write(ready_fd, f"{actual}\n".encode())
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    p.add_argument("--name", default=os.environ.get("NAME", "httpbin"))
    p.add_argument("--fail-status", type=int, default=0, help="answer every request with this status")
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.name, fail_status=args.fail_status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
