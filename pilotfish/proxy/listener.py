"""Listeners: accept connections, recover the original destination, pick a filter chain.

A listener with ``use_original_dst`` (the sidecar's ``virtualOutbound`` on 15001 and
``virtualInbound`` on 15006) receives connections that iptables redirected to it; the address
the client meant to reach is read back with ``SO_ORIGINAL_DST`` and selects the filter chain
(by destination port and address), as Envoy's original-destination listener filter does.
Other listeners use their single chain (or their default chain).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import TYPE_CHECKING, Any

from pilotfish.proxy import model
from pilotfish.proxy.codec import DownstreamConnection
from pilotfish.proxy.stats import HttpStats

if TYPE_CHECKING:
    from pilotfish.proxy.server import Proxy

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80


def original_dst(sock: socket.socket) -> tuple[str, int] | None:
    """The destination a REDIRECTed connection was addressed to, or None."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
            port = struct.unpack_from("!H", raw, 2)[0]
            ip = socket.inet_ntop(socket.AF_INET6, raw[8:24])
            return ip, port
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port = struct.unpack_from("!H", raw, 2)[0]
        ip = socket.inet_ntoa(raw[4:8])
        return ip, port
    except OSError:
        return None


class ChainRuntime:
    """A filter chain ready to serve: its HTTP settings (or TCP proxy) and its stats."""

    __slots__ = ("cfg", "hcm", "tcp", "route_config", "stats", "nets", "name")

    def __init__(self, cfg: model.FilterChain, stats: HttpStats) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.hcm = cfg.http
        self.tcp = cfg.tcp
        self.route_config = cfg.http.route_config if cfg.http else None
        self.stats = stats
        self.nets = [ipaddress.ip_network(c, strict=False) for c in cfg.destination_ips]

    def matches(self, ip: str, port: int) -> bool:
        if self.cfg.destination_port is not None and self.cfg.destination_port != port:
            return False
        if self.nets:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            return any(addr in n for n in self.nets)
        return True


class _Dispatch(asyncio.Protocol):
    """Reads the original destination, then hands the connection to the chain's protocol."""

    def __init__(self, listener: ListenerRuntime) -> None:
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lst = self.listener
        ip, port = lst.destination_of(transport)
        chain = lst.select(ip, port)
        if chain is None:
            transport.abort()
            return
        proto = lst.protocol_for(chain)
        transport.set_protocol(proto)
        proto.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - never reached
        pass


class ListenerRuntime:
    def __init__(self, proxy: Proxy, cfg: model.Listener) -> None:
        self.proxy = proxy
        self.cfg = cfg
        self.name = cfg.name
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[Any] = set()
        self.chains: list[ChainRuntime] = []
        self.default: ChainRuntime | None = None
        self.bound_port = cfg.port
        self.configure(cfg)

    @staticmethod
    def check(cfg: model.Listener) -> None:
        """Raise ValueError if a chain of ``cfg`` cannot be built."""
        chains = [*cfg.filter_chains, *([cfg.default_filter_chain] if cfg.default_filter_chain else [])]
        for fc in chains:
            for c in fc.destination_ips:
                ipaddress.ip_network(c, strict=False)

    def configure(self, cfg: model.Listener) -> None:
        """(Re)build the chains; connections accepted from now on use them."""
        self.cfg = cfg
        px = self.proxy
        self.chains = [ChainRuntime(fc, px.http_stats_for(fc, cfg)) for fc in cfg.filter_chains]
        d = cfg.default_filter_chain
        self.default = ChainRuntime(d, px.http_stats_for(d, cfg)) if d is not None else None

    def select(self, ip: str, port: int) -> ChainRuntime | None:
        for c in self.chains:
            if c.matches(ip, port):
                return c
        return self.default

    def destination_of(self, transport: asyncio.BaseTransport) -> tuple[str, int]:
        if self.cfg.use_original_dst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                od = original_dst(sock)
                if od is not None:
                    return od
        local = transport.get_extra_info("sockname") or ("", 0)
        return local[0], local[1]

    def protocol_for(self, chain: ChainRuntime) -> asyncio.Protocol:
        if chain.tcp is not None:
            from pilotfish.proxy.tcp import TcpProxyConnection

            return TcpProxyConnection(chain, self)
        return DownstreamConnection(chain, self)

    def _factory(self) -> asyncio.Protocol:
        if self.cfg.use_original_dst or len(self.chains) > 0:
            return _Dispatch(self)
        return self.protocol_for(self.default)  # type: ignore[arg-type]

    async def bind(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in self.cfg.address else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.cfg.transparent:
                sock.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
            sock.bind((self.cfg.address, self.cfg.port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.server = await loop.create_server(self._factory, sock=sock, backlog=1024)
        self.bound_port = sock.getsockname()[1]

    def close(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their response."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for c in list(self.connections):
            drain = getattr(c, "drain", None)
            if drain is not None:
                drain()
            else:
                c.closing = True
                if c.active is None and c.parsing is None:
                    c.close()
