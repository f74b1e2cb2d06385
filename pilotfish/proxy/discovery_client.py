"""The proxy's side of the discovery protocol: one persistent connection to the control plane.

The protocol (``docs/reference/discovery.md``) follows xDS's semantics on our own wire
format: every message is a 4-byte big-endian length and a JSON object.

    proxy                                   control plane
      hello {token, node, version, hash, delta}  ->
                                          <-  welcome                 (or error, then close)
                                          <-  snapshot {version, hash, config, digests}
      ack {version} | nack {version, error} ->
                                          <-  delta {version, hash, base, config, digests, new}
                                                                      (only when it changed)

Every version is a complete configuration (state of the world); a ``delta`` message is only
a shorter way to send it, like xDS's incremental variant: it lists every element by digest
and carries just the elements the proxy did not receive in the previous message.
:class:`SnapshotAssembler` rebuilds the whole ProxyConfig from it, reusing the elements it
holds, and checks the content hash; if it cannot, the proxy answers ``nack`` with ``resync``
and the server sends that version whole.

The client applies each snapshot with ``Proxy.apply`` (which keeps the previous snapshot when
it raises), answers ACK or NACK, and when the connection ends it keeps serving what it has and
reconnects with exponential backoff and jitter, telling the server the version (and content
hash) it holds so that an unchanged snapshot is not sent again.

The wire helpers live here, in the data plane, so that a proxy process never imports the
control plane; the server (``pilotfish.controlplane.discovery``) imports them from here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import random
import socket
import ssl as ssl_module
import struct
import sys
import time
from collections.abc import Sequence
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
    """What the control plane sends. ``type``: welcome, snapshot, delta or error; unknown types
    are ignored, so that the server can grow new messages."""

    type: str
    version: str = ""
    hash: str = ""
    config: msgspec.Raw = msgspec.Raw()  # the snapshot, decoded only once it is needed
    error: str = ""
    base: str = ""  # delta: the hash of the snapshot it is a delta against
    digests: dict[str, str] = {}  # list name -> its elements' digests, concatenated, base64
    new: msgspec.Raw = msgspec.Raw()  # delta: {list name: [the elements not in the base]}


class ClientMessage(msgspec.Struct, kw_only=True):
    """What a proxy sends. ``type``: hello, ack or nack."""

    type: str
    token: str = ""
    node: msgspec.Raw = msgspec.Raw()
    version: str = ""
    hash: str | None = None
    error: str = ""
    protocol: int = PROTOCOL_VERSION
    delta: bool = False  # hello: this proxy takes delta messages
    resync: bool = False  # nack: a delta could not be assembled; send the snapshot whole


# --------------------------------------------------------------------------- snapshots and deltas

LISTS = ("listeners", "routes", "clusters", "endpoints", "secrets")  # ProxyConfig's element lists
DIGEST_SIZE = 16  # bytes of each element's BLAKE2b digest
_HEAD = msgspec.json.Encoder()


def content_hash(encoded_head: bytes, lists: Sequence[tuple[str, int, bytes]]) -> str:
    """A snapshot's content hash: BLAKE2b-128 over the encoded config without its lists (and
    with ``version`` "") and, for each non-empty list in field order, its name, its length and
    its elements' digests (BLAKE2b-128 of each element's encoding), concatenated."""
    h = hashlib.blake2b(encoded_head, digest_size=16)
    for name, n, digests in lists:
        h.update(f"\n{name} {n}\n".encode())
        h.update(digests)
    return h.hexdigest()


class Resync(Exception):
    """A delta that cannot be assembled from what this proxy holds: it needs the whole snapshot."""


class _NewElements(msgspec.Struct, kw_only=True):
    listeners: list[model.Listener] = []
    routes: list[model.RouteConfiguration] = []
    clusters: list[model.Cluster] = []
    endpoints: list[model.ClusterEndpoints] = []
    secrets: list[model.Secret] = []


_decode_new = msgspec.json.Decoder(_NewElements).decode
_decode_config = msgspec.json.Decoder(model.ProxyConfig).decode


class SnapshotAssembler:
    """Turns ``snapshot`` and ``delta`` messages into ProxyConfigs (sans-IO).

    It keeps the elements of the last snapshot it assembled, by digest. A delta names every
    element of every list by digest, in order, and carries only the elements that were not in
    the snapshot it is based on; the others are taken from what is kept (the same objects, so
    the proxy can tell an unchanged cluster by identity). Before it is accepted, an assembled
    delta's content hash is computed from its parts and compared with the message's.
    Anything wrong raises :class:`Resync` and forgets what was kept: the proxy asks for the
    whole snapshot.
    """

    def __init__(self) -> None:
        self.hash: str | None = None  # the content hash of the snapshot last assembled
        self._held: dict[str, dict[bytes, Any]] = {}

    def reset(self) -> None:
        self.hash, self._held = None, {}

    def assemble(self, msg: ServerMessage) -> model.ProxyConfig:
        """The message's ProxyConfig (its ``version`` is the message's). Raises Resync, or
        msgspec's DecodeError/ValidationError for an invalid snapshot (then it keeps nothing)."""
        try:
            cfg = self._delta(msg) if msg.type == "delta" else self._full(msg)
        except BaseException:
            self.reset()
            raise
        cfg.version = msg.version
        return cfg

    def _full(self, msg: ServerMessage) -> model.ProxyConfig:
        cfg = _decode_config(msg.config)
        held: dict[str, dict[bytes, Any]] = {}
        for name, text in msg.digests.items():
            ds = _split(text, name)
            items = getattr(cfg, name, None)
            if items is None or len(items) != len(ds):
                raise Resync(f"{name}: {len(ds)} digests for {len(items or ())} elements")
            held[name] = dict(zip(ds, items, strict=True))
        self.hash, self._held = (msg.hash or None, held) if msg.digests else (None, {})
        return cfg

    def _delta(self, msg: ServerMessage) -> model.ProxyConfig:
        if self.hash is None or msg.base != self.hash:
            raise Resync(f"delta against {msg.base or '-'}, but this proxy holds {self.hash or 'no snapshot'}")
        head = _decode_config(msg.config)
        new = _decode_new(msg.new) if msg.new else _NewElements()
        head.version = ""
        parts: list[tuple[str, int, bytes]] = []
        lists: dict[str, list] = {}
        held: dict[str, dict[bytes, Any]] = {}
        for name in LISTS:
            text = msg.digests.get(name)
            fresh = getattr(new, name)
            if not text:
                if fresh:
                    raise Resync(f"{name}: new elements but no digests")
                lists[name] = []
                continue
            ds = _split(text, name)
            old = self._held.get(name, {})
            it = iter(fresh)
            items = []
            for d in ds:
                x = old.get(d)
                if x is None:
                    x = next(it, None)
                    if x is None:
                        raise Resync(f"{name}: an element is neither held nor sent")
                items.append(x)
            if next(it, None) is not None:
                raise Resync(f"{name}: more new elements than missing digests")
            lists[name] = items
            held[name] = dict(zip(ds, items, strict=True))
            parts.append((name, len(items), b"".join(ds)))
        got = content_hash(_HEAD.encode(head), parts)
        if got != msg.hash:
            raise Resync(f"the assembled snapshot hashes to {got}, not {msg.hash}")
        cfg = msgspec.structs.replace(head, **lists)  # checks the references again
        self.hash, self._held = msg.hash, held
        return cfg


def _split(text: str, name: str) -> list[bytes]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise Resync(f"{name}: digests are not base64") from None
    if len(raw) % DIGEST_SIZE:
        raise Resync(f"{name}: digests of {len(raw)} bytes")
    return [raw[i:i + DIGEST_SIZE] for i in range(0, len(raw), DIGEST_SIZE)]


# --------------------------------------------------------------------------- framing


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
        self.assembler = SnapshotAssembler()
        self.deltas = self.resyncs = 0
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
            "deltas": self.deltas,
            "resyncs": self.resyncs,
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
            "hash": self._held_hash if snap is self._held_snapshot else None, "delta": True,
        }))
        self.assembler.reset()  # a new session starts with a whole snapshot
        while True:
            data = await read_frame(reader, MAX_SERVER_MESSAGE)
            if data is None:
                return
            msg = msgspec.json.decode(data, type=ServerMessage)
            if msg.type in ("snapshot", "delta"):
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
            cfg = self.assembler.assemble(msg)
        except Resync as e:
            # not a rejection of the configuration: ask for it whole, keep serving meanwhile
            self.resyncs += 1
            self._log(f"cannot assemble delta {msg.version}: {e}; asking for the whole snapshot")
            writer.write(encode({"type": "nack", "version": msg.version, "error": str(e), "resync": True}))
            await writer.drain()
            return
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            detail = model.validation_message(e) if isinstance(e, msgspec.ValidationError) else str(e)
            error = f"invalid snapshot: {detail}"
            px.note_rejected(msg.version, error)
        else:
            self.deltas += msg.type == "delta"
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
