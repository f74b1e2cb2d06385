"""The proxy's side of the discovery protocol: one persistent connection to the control plane.

The protocol (``docs/reference/discovery.md``) follows xDS's state-of-the-world semantics on
our own wire format: every message is a 4-byte big-endian length and a JSON object.

    proxy                                   control plane
      hello {token, node, version, hash}  ->
                                          <-  welcome                 (or error, then close)
                                          <-  snapshot {version, hash, config}
      ack {version} | nack {version, error} ->
                                          <-  snapshot ...            (only when it changed)

The client applies each snapshot with ``Proxy.apply`` (which keeps the previous snapshot when
it raises), answers ACK or NACK, and when the connection ends it keeps serving what it has and
reconnects with exponential backoff and jitter, telling the server the version (and content
hash) it holds so that an unchanged snapshot is not sent again.

The wire helpers live here, in the data plane, so that a proxy process never imports the
control plane; the server (``pilotfish.controlplane.discovery``) imports them from here.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl as ssl_module
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

from pilotfish.proxy import model

if TYPE_CHECKING:
    from pilotfish.proxy.server import Proxy

PROTOCOL_VERSION = 1
DEFAULT_PORT = 15010  # Istio's plaintext xDS port
MAX_CLIENT_MESSAGE = 1 << 20  # hello / ack / nack: the server reads at most this much
MAX_SERVER_MESSAGE = 256 << 20  # a snapshot: the client reads at most this much

_HEADER = struct.Struct(">I")
_encode = msgspec.json.encode


# --------------------------------------------------------------------------- wire format


class ProtocolError(Exception):
    """The peer broke the framing or sent something that cannot be read."""


class ServerMessage(msgspec.Struct, kw_only=True):
    """What the control plane sends. ``type``: welcome, snapshot or error; unknown types are
    ignored, so that the server can grow new messages."""

    type: str
    version: str = ""
    hash: str = ""
    config: msgspec.Raw = msgspec.Raw()  # the snapshot, decoded only once it is needed
    error: str = ""


class ClientMessage(msgspec.Struct, kw_only=True):
    """What a proxy sends. ``type``: hello, ack or nack."""

    type: str
    token: str = ""
    node: msgspec.Raw = msgspec.Raw()
    version: str = ""
    hash: str | None = None
    error: str = ""
    protocol: int = PROTOCOL_VERSION


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def encode(msg: dict[str, Any]) -> bytes:
    return frame(_encode(msg))


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """One message's payload, or None when the peer closed the connection between messages."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise ProtocolError("connection closed inside a message header") from None
    (n,) = _HEADER.unpack(head)
    if n > limit:
        raise ProtocolError(f"message of {n} bytes is over the limit of {limit}")
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"connection closed inside a message of {n} bytes") from None


def set_keepalive(sock: socket.socket | None) -> None:
    """TCP keepalive, so that a silently vanished peer (host down, partition) is noticed in
    about 25 s instead of hours; a dead peer process is noticed at once anyway (FIN/RST)."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            opt = getattr(socket, name, None)
            if opt is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    except OSError:
        pass


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``HOST`` (port 15010)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {text!r} (expected [IPV6]:PORT)")
        port = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"invalid address {text!r}: no host")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {text!r}: bad port {port!r}")
    return host, int(port)


# --------------------------------------------------------------------------- the client


class Refused(Exception):
    """The control plane answered with an error (a bad token, an invalid node)."""


class DiscoveryClient:
    """Keeps ``proxy`` in sync with the control plane at ``address``, forever.

    ``start()`` runs it as a task of the running loop, ``stop()`` ends it, ``state()`` is what
    the admin endpoint shows at ``/discovery``.
    """

    def __init__(self, proxy: Proxy, address: str | tuple[str, int], token: str, node: model.Node,
                 *, ssl: ssl_module.SSLContext | None = None, backoff_initial: float = 0.1,
                 backoff_max: float = 5.0, connect_timeout: float = 5.0) -> None:
        self.proxy = proxy
        self.host, self.port = parse_address(address) if isinstance(address, str) else address
        self.token = token
        self.node = node
        self.ssl = ssl  # the mTLS seam: a client context with the workload certificate
        self.backoff_initial = backoff_initial
        self.backoff_max = max(backoff_max, backoff_initial)
        self.connect_timeout = connect_timeout
        self.connected = False  # connected and authenticated (the server said welcome)
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.connects = 0  # sessions the server accepted
        self.attempts = 0  # connection attempts since the last accepted session
        self.received = self.acked = self.nacked = 0
        self.last_nack: dict[str, str] | None = None
        # the content hash of the snapshot the control plane sent and we applied, and that
        # snapshot object: if the proxy's snapshot is another one (a local POST /config or
        # SIGHUP), we do not claim the hash when we reconnect
        self._held_hash: str | None = None
        self._held_snapshot: Any = None
        self._task: asyncio.Task | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stopped = False
        self._failing = False  # a streak of failures is logged once, when it starts

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    def stop(self) -> None:
        self._stopped = True
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()

    def state(self) -> dict[str, Any]:
        snap = self.proxy.snapshot
        return {
            "address": self.address,
            "connected": self.connected,
            "connected_since": self.connected_since,
            "node_id": self.node.id,
            "version": snap.version,
            "hash": self._held_hash if snap is self._held_snapshot else None,
            "snapshots_received": self.received,
            "acked": self.acked,
            "nacked": self.nacked,
            "last_nack": self.last_nack,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "sessions": self.connects,
            "attempts_since_connected": self.attempts,
        }

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        delay = self.backoff_initial
        while not self._stopped:
            self.attempts += 1
            try:
                await self._session()
                err = "the control plane closed the connection"
            except asyncio.CancelledError:
                raise
            except Refused as e:
                err = f"refused by the control plane: {e}"
            except (OSError, TimeoutError, ProtocolError, msgspec.DecodeError) as e:
                err = _describe(e)
            except Exception as e:  # never let the client die: the proxy would stop syncing
                err = f"unexpected error: {type(e).__name__}: {e}"
            finally:
                was_connected = self.connected
                self.connected = False
                self.connected_since = None
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
            if self._stopped:
                return
            self.last_error, self.last_error_at = err, time.time()
            if was_connected:
                delay = self.backoff_initial  # the session had worked: try again promptly
            if was_connected or not self._failing:
                self._log(f"{err}; keeping version {self.proxy.snapshot.version!r}, retrying")
            self._failing = True
            await asyncio.sleep(random.uniform(delay / 2, delay))  # jitter spreads reconnections
            delay = min(delay * 2, self.backoff_max)

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl), self.connect_timeout
        )
        self._writer = writer
        set_keepalive(writer.get_extra_info("socket"))
        snap = self.proxy.snapshot
        writer.write(encode({
            "type": "hello", "protocol": PROTOCOL_VERSION, "token": self.token,
            "node": msgspec.to_builtins(self.node), "version": snap.version,
            "hash": self._held_hash if snap is self._held_snapshot else None,
        }))
        while True:
            data = await read_frame(reader, MAX_SERVER_MESSAGE)
            if data is None:
                return
            msg = msgspec.json.decode(data, type=ServerMessage)
            if msg.type == "snapshot":
                await self._apply(msg, writer)
            elif msg.type == "welcome":
                self.connected, self.connected_since = True, time.time()
                self.connects += 1
                self.attempts = 0
                self._failing = False
                self._log(f"connected to {self.address} as {self.node.id}")
            elif msg.type == "error":
                raise Refused(msg.error or "no reason given")

    async def _apply(self, msg: ServerMessage, writer: asyncio.StreamWriter) -> None:
        from pilotfish.proxy.server import ConfigRejected

        px = self.proxy
        self.received += 1
        if px.draining:
            return
        error: str | None = None
        try:
            cfg = msgspec.json.decode(msg.config, type=model.ProxyConfig)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            error = f"invalid snapshot: {e}"
            px.note_rejected(msg.version, error)
        else:
            cfg.version = msg.version
            try:
                await px.apply(cfg)
            except ConfigRejected as e:
                error = str(e)
            except Exception as e:  # a bug in apply must not end the session: report it
                error = f"internal error applying the snapshot: {type(e).__name__}: {e}"
                px.note_rejected(msg.version, error)
        if error is None:
            self._held_hash, self._held_snapshot = msg.hash or None, px.snapshot
            px.ready = True  # a proxy started without a snapshot is ready from its first one
            self.acked += 1
            writer.write(encode({"type": "ack", "version": msg.version}))
            self._log(f"applied version {msg.version}")
        else:
            self.nacked += 1
            self.last_nack = {"version": msg.version, "error": error}
            writer.write(encode({"type": "nack", "version": msg.version, "error": error}))
            self._log(f"rejected version {msg.version}, keeping {px.snapshot.version!r}: {error}")
        await writer.drain()

    def _log(self, text: str) -> None:
        sys.stderr.write(f"pilotfish proxy: discovery: {text}\n")
        sys.stderr.flush()


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out connecting to the control plane"
    if isinstance(e, OSError) and e.strerror:
        return f"cannot reach the control plane: {e.strerror}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def attach(proxy: Proxy, client: DiscoveryClient, *, bootstrapped: bool) -> None:
    """Wire a client into a proxy before ``Proxy.start()``: its state on the admin's /discovery, readiness
    (a proxy without a bootstrap snapshot answers /ready 503 until its first snapshot), and
    stopping the client when the proxy drains. Start the client after ``Proxy.start()``."""
    proxy.discovery = client
    proxy.ready_on_start = bootstrapped
    proxy.on_drain.append(client.stop)
