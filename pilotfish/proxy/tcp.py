"""Raw TCP proxying for non-HTTP ports (Envoy's tcp_proxy): bytes both ways, with
backpressure, one access-log record per connection."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from pilotfish.proxy.http import UF, UH

if TYPE_CHECKING:
    from pilotfish.proxy.listener import ChainRuntime, ListenerRuntime


class _Upstream(asyncio.Protocol):
    def __init__(self, down: TcpProxyConnection) -> None:
        self.down = down
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.down.bytes_sent += len(data)
        self.down.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        down = self.down
        down.up_eof = True
        if down.down_eof or down.transport is None or not down.transport.can_write_eof():
            return None  # both directions are done: close
        down.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.upstream_closed()

    def pause_writing(self) -> None:
        self.down.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.down.transport.resume_reading()  # type: ignore[union-attr]


class TcpProxyConnection(asyncio.Protocol):
    def __init__(self, chain: ChainRuntime, listener: ListenerRuntime) -> None:
        self.chain = chain
        self.listener = listener
        self.proxy = listener.proxy
        self.transport: asyncio.Transport | None = None
        self.up: _Upstream | None = None
        self.pending: list[bytes] = []
        self.closed = False
        self.closing = False
        self.down_eof = False
        self.up_eof = False
        self.active = None
        self.parsing = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.start = time.monotonic()
        self.start_wall = time.time()
        self.flags: list[str] | None = None
        self.upstream_host: str | None = None
        self.cluster_name = chain.tcp.cluster  # type: ignore[union-attr]
        self.local_address = ""
        self.remote_address = ""
        self.dest = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.remote_address = f"{peer[0]}:{peer[1]}"
        self.dest = self.listener.destination_of(transport)
        self.local_address = f"{self.dest[0]}:{self.dest[1]}"
        self.listener.connections.add(self)
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        snap = self.proxy.snapshot
        cluster = snap.clusters.get(self.cluster_name)
        if cluster is None:
            self._fail(UH)
            return
        host = (cluster.original_dst_host(*self.dest) if cluster.original_dst
                else cluster.lb.choose(None, None, None))
        if host is None:
            self._fail(UH)
            return
        self.upstream_host = host.key
        cluster.stats.upstream_cx_total += 1
        loop = asyncio.get_running_loop()
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(lambda: _Upstream(self), host.address, host.port),
                cluster.connect_timeout,
            )
        except (OSError, TimeoutError):
            cluster.stats.upstream_cx_connect_fail += 1
            if cluster.outlier is not None:
                cluster.outlier.record_local_failure(host)
            self._fail(UF)
            return
        if cluster.outlier is not None:
            cluster.outlier.record_local_success(host)
        if self.closed:
            up.transport.close()
            return
        self.up = up
        for chunk in self.pending:
            up.transport.write(chunk)
        self.pending = []
        self.transport.resume_reading()  # type: ignore[union-attr]

    def _fail(self, flag: str) -> None:
        self.flags = [flag]
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self.up is not None and self.up.transport is not None:
            self.up.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool | None:
        self.down_eof = True
        up = self.up
        if self.up_eof or up is None or up.transport is None or not up.transport.can_write_eof():
            return None  # both directions are done (or no upstream yet): close
        up.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    def upstream_closed(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.listener.connections.discard(self)
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()
        self.proxy.record_tcp(self)

    def drain(self) -> None:
        pass  # TCP connections run to their end when a listener goes away

    # access-log record fields
    def flags_str(self) -> str:
        return ",".join(self.flags) if self.flags else "-"

    def duration_ms(self) -> int:
        return int((time.monotonic() - self.start) * 1000)

    def log_line(self) -> str:
        from pilotfish.proxy.accesslog import _d, _iso

        return (
            f'[{_iso(self.start_wall)}] "- - -" 0 {self.flags_str()} - - "-" {self.bytes_received} '
            f'{self.bytes_sent} {self.duration_ms()} - "-" "-" "-" "-" "{_d(self.upstream_host)}" '
            f"{self.cluster_name} - {self.local_address} {self.remote_address} - -\n"
        )

    def log_json(self) -> str:
        import json

        from pilotfish.proxy.accesslog import _iso

        return json.dumps({
            "start_time": _iso(self.start_wall), "method": None, "path": None, "protocol": None,
            "response_code": 0, "response_flags": self.flags_str(), "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent, "duration": self.duration_ms(), "upstream_host": self.upstream_host,
            "upstream_cluster": self.cluster_name, "downstream_local_address": self.local_address,
            "downstream_remote_address": self.remote_address,
        }, separators=(",", ":")) + "\n"
