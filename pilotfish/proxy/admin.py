"""The admin endpoint (default 127.0.0.1:15000), with Envoy's paths:

- ``GET /ready``: 200 ``LIVE`` once listeners are bound (503 before, and while draining)
- ``GET /config_dump``: the snapshot in force, its version, and the last rejection
- ``GET /clusters``: per-host lines as Envoy prints them (``?format=json`` too)
- ``GET /stats``: Envoy-named counters (``?filter=regex-free substring``, ``?format=json``)
- ``GET /stats/prometheus``: the same in Prometheus text
- ``GET /listeners``, ``GET /server_info``, ``GET /discovery`` (the discovery client's state)
- ``POST /config``: push a new snapshot (YAML or JSON body); 200 ACK or 400 NACK with the
  error, the previous snapshot staying in force — the seam the control plane pushes through
- ``POST /quitquitquit``: drain and exit (as Istio's pilot-agent asks Envoy)
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import httptools

from pilotfish.proxy import model
from pilotfish.proxy.stats import render_prometheus, render_text

if TYPE_CHECKING:
    from pilotfish.proxy.server import Proxy

MAX_BODY = 64 * 1024 * 1024


class _AdminConn(asyncio.Protocol):
    def __init__(self, admin: AdminServer) -> None:
        self.admin = admin
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.respond(400, "bad request\n")

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            self.respond(413, "too large\n")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        url = httptools.parse_url(self.url)
        path = url.path.decode()
        query = parse_qs(url.query.decode()) if url.query else {}
        asyncio.get_running_loop().create_task(self.admin.handle(self, method, path, query, b"".join(self.body)))

    def respond(self, status: int, body: str | bytes, ctype: str = "text/plain") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        b = body.encode() if isinstance(body, str) else body
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  413: "Payload Too Large", 503: "Service Unavailable"}.get(status, "OK")
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {len(b)}\r\n"
            f"connection: close\r\n\r\n".encode() + b
        )
        self.transport.close()


class AdminServer:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, address: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _AdminConn(self), address, port)
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def handle(self, c: _AdminConn, method: str, path: str, query: dict, body: bytes) -> None:
        px = self.proxy
        if path == "/ready":
            if px.ready and not px.draining:
                c.respond(200, "LIVE\n")
            else:
                c.respond(503, "DRAINING\n" if px.draining else "PRE_INITIALIZING\n")
        elif path == "/config_dump":
            snap = px.snapshot
            dump = {
                "version": snap.version,
                "last_rejected": {"version": px.last_rejected_version, "error": px.last_error}
                if px.last_error else None,
                "config": model.to_builtins(snap.cfg),
            }
            c.respond(200, json.dumps(dump, indent=2), "application/json")
        elif path == "/clusters":
            clusters = px.snapshot.clusters
            if query.get("format", [""])[0] == "json":
                out = []
                for name, rt in clusters.items():
                    out.append({
                        "name": name,
                        "hosts": [
                            {"address": h.key, "weight": h.weight, "health": h.health,
                             "ejected": h.ejected, "rq_active": h.active_requests}
                            for h in rt.hosts
                        ],
                    })
                c.respond(200, json.dumps({"cluster_statuses": out}, indent=2), "application/json")
            else:
                lines: list[str] = []
                for rt in clusters.values():
                    lines += rt.host_rows()
                c.respond(200, "\n".join(lines) + "\n")
        elif path in ("/stats", "/stats/prometheus"):
            px.flush_records()  # the telemetry of requests finished just now
            clusters = {}
            for name, rt in px.snapshot.clusters.items():
                rt.refresh_gauges()
                clusters[rt.cfg.alt_stat_name or name] = (rt.stats, rt.extra_stats())
            if path == "/stats/prometheus" or query.get("format", [""])[0] == "prometheus":
                c.respond(200, render_prometheus(px.server_stats, px.http_stats, clusters) + px.metrics.render())
                return
            text = render_text(px.server_stats, px.http_stats, clusters, query.get("filter", [None])[0])
            if query.get("format", [""])[0] == "json":
                stats = []
                for line in text.splitlines():
                    k, _, v = line.partition(": ")
                    stats.append({"name": k, "value": int(v)})
                c.respond(200, json.dumps({"stats": stats}), "application/json")
            else:
                c.respond(200, text)
        elif path == "/listeners":
            out = [{"name": n, "address": f"{lr.cfg.address}:{lr.bound_port}"} for n, lr in px.listeners.items()]
            c.respond(200, json.dumps(out, indent=2), "application/json")
        elif path == "/server_info":
            from pilotfish import __version__

            info = {"version": __version__, "state": "LIVE" if px.ready else "PRE_INITIALIZING",
                    "node": model.to_builtins(px.snapshot.cfg.node), "config_version": px.snapshot.version}
            c.respond(200, json.dumps(info, indent=2), "application/json")
        elif path == "/discovery":
            client = px.discovery
            state = client.state() if client is not None else {"enabled": False}
            c.respond(200, json.dumps(state, indent=2), "application/json")
        elif path == "/config":
            if method != "POST":
                c.respond(405, "POST a snapshot\n")
                return
            await self._push(c, body)
        elif path == "/quitquitquit":
            if method != "POST":
                c.respond(405, "POST to quit\n")
                return
            c.respond(200, "OK\n")
            asyncio.get_running_loop().create_task(px.drain_and_stop())
        else:
            c.respond(404, "paths: /ready /config_dump /clusters /stats /stats/prometheus /listeners "
                           "/server_info /discovery POST /config POST /quitquitquit\n")

    async def _push(self, c: _AdminConn, body: bytes) -> None:
        from pilotfish.proxy.server import ConfigRejected

        px = self.proxy
        try:
            cfg = model.load_config_text(body.decode("utf-8"), "<pushed>")
        except (model.ConfigError, UnicodeDecodeError) as e:
            px.note_rejected(_version_of(body), str(e))
            c.respond(400, json.dumps({"status": "NACK", "version": px.snapshot.version, "error": str(e)}),
                      "application/json")
            return
        try:
            await px.apply(cfg)
        except ConfigRejected as e:
            c.respond(400, json.dumps({"status": "NACK", "version": px.snapshot.version, "error": str(e)}),
                      "application/json")
            return
        c.respond(200, json.dumps({"status": "ACK", "version": cfg.version}), "application/json")


def _version_of(body: bytes) -> str | None:
    """The version a rejected snapshot claims, when it can be read at all."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    v = data.get("version") if isinstance(data, dict) else None
    return str(v) if v is not None else None
