"""The discovery server: computes each connected proxy's snapshot and pushes it, xDS-style.

The model is go-control-plane's snapshot cache reduced to what we need: one function,
``compute(node) -> ProxyConfig``, says what a proxy should run; the server remembers what it
sent to each proxy (the config, its version and a content hash) and what the proxy answered,
and sends a proxy a new snapshot only when the content changed. Every version is the whole
configuration (state of the world); to a proxy that says it takes deltas, a version after
its first is sent as a delta message carrying only the elements (clusters, route tables...)
that the previous message on the connection did not have (see ``SnapshotAssembler``).

- A new connection says ``hello`` with a bootstrap token (compared in constant time), its node
  and the version and hash it holds; it gets ``welcome`` and, unless it already holds the same
  content, its snapshot at once.
- ``request_push(reason)`` is debounced (100 ms quiet, at most ``max_debounce`` after the first
  request, as Istio's PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX), then every connected proxy is
  recomputed, yielding to the event loop every few milliseconds, and the changed ones are sent.
- Versions are Istio-like ``2026-11-25T19:40:00.123Z/17``: the UTC time a version was made
  (to the millisecond, so that a restarted server does not reuse a name) and a counter that
  grows by one per push (and per snapshot sent to a newly connected proxy).
- Each connection has its own writer, holding at most one pending snapshot: a slow proxy gets
  only the latest one and never holds up the others. The message is encoded when the writer
  takes it, so a snapshot replaced before it was written is never encoded.
- Encoding is shared (:class:`SnapshotEncoder`): translate() hands proxies the same element
  objects (clusters, route tables, listeners...), so each element is encoded and hashed once
  and every snapshot is assembled from those pieces. The content hash is computed from the
  pieces' digests, never by hashing megabytes per proxy.

Wire format and the proxy's side: ``pilotfish/proxy/discovery_client.py`` and
``docs/reference/discovery.md``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import logging
import ssl as ssl_module
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from itertools import accumulate
from operator import is_not
from typing import Any, Literal

import msgspec

from pilotfish.proxy import model
from pilotfish.proxy.discovery_client import (
    DIGEST_SIZE,
    LISTS,
    MAX_CLIENT_MESSAGE,
    PROTOCOL_VERSION,
    ClientMessage,
    ProtocolError,
    content_hash,
    encode,
    read_frame,
    set_keepalive,
)

log = logging.getLogger("pilotfish.controlplane.discovery")

HELLO_TIMEOUT = 10.0  # a connection that does not say hello within this is closed
SLICE = 0.005  # during a push, yield to the event loop after this much computing
ENCODE_CACHE_BYTES = 128 << 20  # the encoder forgets its pieces when they add up to more

State = Literal["SYNCED", "STALE", "NACKED", "NOT_SENT"]


class ProxyStatus(msgspec.Struct, kw_only=True):
    """One proxy as the control plane sees it (the data behind ``pilotfish proxy-status``).

    ``state``: SYNCED (it acked the version last sent), STALE (a version was sent and not yet
    answered), NACKED (it rejected the version last sent; it keeps serving its previous one),
    NOT_SENT (nothing could be sent yet: see ``compute_error``). Times are Unix seconds.
    """

    proxy_id: str
    node: model.Node
    connected: bool
    connected_at: float | None
    disconnected_at: float | None
    peer: str | None
    state: State
    sent_version: str | None
    sent_at: float | None
    acked_version: str | None
    acked_at: float | None
    nack: str | None  # the error of the NACK, while the version last sent stands rejected
    nack_version: str | None
    compute_error: str | None  # the last compute(node) failure (the previous snapshot stays)


class AckEvent(msgspec.Struct, kw_only=True):
    """Passed to ``on_ack``. Times are ``time.monotonic()`` seconds."""

    proxy_id: str
    version: str
    requested_at: float  # the first request_push of the push that made it (or the connection)
    sent_at: float  # when the snapshot was queued for the proxy
    acked_at: float

    @property
    def latency(self) -> float:
        """Queued -> acknowledged (the proxy's apply plus the round trip)."""
        return self.acked_at - self.sent_at

    @property
    def since_request(self) -> float:
        """request_push -> acknowledged: what a user waits for after ``apply``."""
        return self.acked_at - self.requested_at


# --------------------------------------------------------------------------- encoding

_SMALL = 16  # shorter lists are looked up element by element
_JSON = msgspec.json.Encoder()


class _Seen:
    """A list seen before: a private copy of its elements (held, so their ids stay valid), their
    encoded pieces, their digests (concatenated) and the running total of the pieces' sizes."""

    __slots__ = ("items", "raws", "digests", "sizes")

    def __init__(self, items: list, raws: list[msgspec.Raw], digests: bytes) -> None:
        self.items, self.raws, self.digests = items, raws, digests
        self.sizes = array("q", accumulate(map(len, raws), initial=0))


class PreparedSnapshot:
    """A snapshot ready to send: its content ``hash`` and, on demand, the framed message, whole
    or as a delta against a snapshot the proxy received before."""

    __slots__ = ("hash", "size", "digests", "_wire", "_head")

    def __init__(self, wire: model.ProxyConfig, head: model.ProxyConfig, digests: dict[str, bytes],
                 digest: str, size: int) -> None:
        self.hash = digest
        self.size = size  # a little more than the message's size
        self.digests = digests  # list name -> its elements' digests, concatenated (non-empty lists)
        self._wire = wire  # the config with version "" and lists of msgspec.Raw pieces
        self._head = head  # the config with version "" and empty lists

    def _digests_b64(self) -> dict[str, str]:
        # made per message, not kept: a connection keeps its last snapshot (for a resync),
        # and thousands of connections would each keep tens of KB of text
        return {name: base64.b64encode(d).decode() for name, d in self.digests.items()}

    def message(self, version: str, *, digests: bool = False) -> bytearray:
        """The framed ``snapshot`` message: the same bytes as encoding the ProxyConfig (with
        ``version`` "") inside ``{"type": "snapshot", "version", "hash", "config"}``, plus the
        elements' ``digests`` for a proxy that takes deltas."""
        msg: dict[str, Any] = {"type": "snapshot", "version": version, "hash": self.hash, "config": self._wire}
        if digests:
            msg["digests"] = self._digests_b64()
        return _frame(msg, self.size + len(version) + (sum(map(len, self.digests.values())) * 3 // 2 if digests else 0))

    def delta_message(self, version: str, base_hash: str, base: dict[str, bytes]) -> bytearray:
        """The framed ``delta`` message against ``base`` (the digests of the snapshot the proxy
        received last, whose hash is ``base_hash``): the config without its lists, every list's
        digests in order, and only the elements whose digest is not in the base's same list."""
        new: dict[str, list[msgspec.Raw]] = {}
        size = 256
        for name, ds in self.digests.items():
            old = base.get(name, b"")
            size += len(ds) * 3 // 2
            if ds == old:
                continue
            have = {old[i:i + DIGEST_SIZE] for i in range(0, len(old), DIGEST_SIZE)}
            raws = getattr(self._wire, name)
            items = [raws[k] for k in range(len(raws)) if ds[k * DIGEST_SIZE:(k + 1) * DIGEST_SIZE] not in have]
            if items:
                new[name] = items
                size += sum(map(len, items)) + len(items)
        return _frame({"type": "delta", "version": version, "hash": self.hash, "base": base_hash,
                       "config": self._head, "digests": self._digests_b64(), "new": new}, size)


def _frame(msg: dict[str, Any], size_hint: int) -> bytearray:
    buf = bytearray(size_hint + 4)  # allocated once; encode_into trims it
    _JSON.encode_into(msg, buf, 4)
    buf[:4] = (len(buf) - 4).to_bytes(4, "big")
    return buf


class SnapshotEncoder:
    """Encodes snapshots for the wire, doing the work shared between proxies once.

    translate() gives the proxies of a namespace the same element objects (docs/reference/
    translation.md, section 12): a proxy's lists are the shared template's lists with its own
    inbound elements inserted. This encoder therefore

    - encodes and hashes each top-level element (a listener, a route table, a cluster, a
      cluster's endpoints, a secret) once, keyed by identity, and keeps a reference to it so
      that its ``id`` cannot be reused while the piece is cached;
    - remembers long lists it has seen (by their two end elements, and by each); a list that
      shares its ends with one of them takes the pieces and digests of the common ends from it
      (after checking identity element by element, at C speed) and looks up only the run in
      between (a proxy's own inbound elements, inserted into its namespace's template);
    - assembles the message from ``msgspec.Raw`` pieces: the bytes are exactly those of
      encoding the ProxyConfig (``version`` "").

    The content hash is BLAKE2b-128 over the encoded config without its lists (``version`` "")
    and, for each non-empty list in field order, its name, its length and the BLAKE2b-128
    digest of each element's encoding. It is a function of the encoded content only, so a
    restarted control plane computes the same hash for the same configuration.

    Elements must not be mutated while an encoder may have them cached (translate's output
    is read-only by contract). The discovery server uses one encoder per push (and for the
    connections that arrive until the next push); the cache is cleared when its pieces add up
    to more than ``max_bytes``. The cached elements are kept alive with their pieces: with
    translate they are alive anyway (its caches hold them), but a ``compute`` that builds
    fresh objects for every call only fills the cache until it is cleared.
    """

    def __init__(self, max_bytes: int = ENCODE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pieces: dict[int, tuple[Any, msgspec.Raw, bytes]] = {}
        self._seen: dict[tuple[str, int, int], _Seen] = {}  # (list, first or 0, last or -1)
        self.cached_bytes = 0
        self.encoded = 0  # elements encoded (cache misses)
        self.encoded_bytes = 0
        self.prepared = 0

    def clear(self) -> None:
        self._pieces.clear()
        self._seen.clear()
        self.cached_bytes = 0

    def prepare(self, cfg: model.ProxyConfig) -> PreparedSnapshot:
        head = copy.copy(cfg)  # shallow: no validation again, the caller's object untouched
        head.version = ""
        wire = copy.copy(head)
        lists: list[tuple[str, int, bytes]] = []
        size = 128  # the envelope
        for name in LISTS:
            items = getattr(cfg, name)
            if not items:
                continue
            setattr(head, name, [])
            raws, digests, nbytes = self._list(name, items)
            setattr(wire, name, raws)
            lists.append((name, len(items), digests))
            size += nbytes + len(items) + len(name) + 8
        encoded_head = _JSON.encode(head)
        self.prepared += 1
        if self.cached_bytes > self.max_bytes:
            self.clear()
        return PreparedSnapshot(wire, head, {name: d for name, _, d in lists}, content_hash(encoded_head, lists),
                                size + len(encoded_head))

    def _list(self, name: str, items: Sequence[Any]) -> tuple[list[msgspec.Raw], bytes, int]:
        """The pieces of ``items``, their digests (concatenated) and their total size."""
        n = len(items)
        if n < _SMALL:
            raws, digests = self._lookup(items)
            return raws, digests, sum(map(len, raws))
        # a list seen before with the same two ends, else one sharing this one's last or first
        # element (a proxy's own elements may sit at either end: its inbound endpoints sort
        # first, for instance)
        first, last = id(items[0]), id(items[-1])
        get = self._seen.get
        seen = get((name, first, last)) or get((name, -1, last)) or get((name, 0, first))
        if seen is None:
            raws, digests = self._lookup(items)
            seen = self._remember(name, items, raws, digests)
            return raws, digests, seen.sizes[-1]
        ref = seen.items
        m = len(ref)
        # the common ends, by identity, element by element at C speed
        forward = list(map(is_not, items, ref))
        try:
            start = forward.index(True)
        except ValueError:
            start = len(forward)
            if n == m:
                return seen.raws, seen.digests, seen.sizes[-1]
        if n == m:
            tail = forward[::-1].index(True)
        else:
            backward = list(map(is_not, reversed(items), reversed(ref)))
            try:
                tail = backward.index(True)
            except ValueError:
                tail = len(backward)
        tail = min(tail, min(n, m) - start)
        mid_raws, mid_digests = self._lookup(items[start:n - tail])
        raws = seen.raws[:start] + mid_raws + seen.raws[m - tail:]
        digests = seen.digests[:start * DIGEST_SIZE] + mid_digests + seen.digests[(m - tail) * DIGEST_SIZE:]
        sizes = seen.sizes
        nbytes = sizes[start] + sum(map(len, mid_raws)) + sizes[m] - sizes[m - tail]
        if n - tail - start > n // 4:  # a poor reference: compare the next ones with this list
            self._remember(name, items, raws, digests)
        return raws, digests, nbytes

    def _remember(self, name: str, items: Sequence[Any], raws: list[msgspec.Raw], digests: bytes) -> _Seen:
        seen = _Seen(list(items), raws, digests)  # a copy: the caller's list may change later
        first, last = id(items[0]), id(items[-1])
        self._seen[(name, first, last)] = seen
        self._seen[(name, -1, last)] = seen
        self._seen[(name, 0, first)] = seen
        self.cached_bytes += len(items) * (3 * 8 + DIGEST_SIZE)
        return seen

    def _lookup(self, items: Sequence[Any]) -> tuple[list[msgspec.Raw], bytes]:
        get = self._pieces.get
        raws: list[msgspec.Raw] = []
        digests: list[bytes] = []
        for x in items:
            piece = get(id(x))
            if piece is None:
                data = _JSON.encode(x)
                piece = (x, msgspec.Raw(data), hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest())
                self._pieces[id(x)] = piece
                self.cached_bytes += len(data)
                self.encoded += 1
                self.encoded_bytes += len(data)
            raws.append(piece[1])
            digests.append(piece[2])
        return raws, b"".join(digests)


class _Conn:
    """One accepted, authenticated connection and its writer task.

    For a proxy that takes deltas, ``base`` is the hash and element digests of the last
    snapshot written on this connection: the proxy reads messages in order, so when it reads
    the next one it holds that one's elements, whether or not it could apply it.
    """

    __slots__ = ("writer", "peer", "delta", "pending", "last", "base", "wake", "task")

    def __init__(self, writer: asyncio.StreamWriter, peer: str, delta: bool = False) -> None:
        self.writer = writer
        self.peer = peer
        self.delta = delta  # the proxy said it takes deltas
        self.pending: tuple[PreparedSnapshot, str] | None = None  # the latest snapshot not yet written
        self.last: tuple[PreparedSnapshot, str] | None = None  # the last snapshot written
        self.base: tuple[str, dict[str, bytes]] | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def resync(self) -> None:
        """The proxy could not assemble a delta: send it the last snapshot whole."""
        self.base = None
        if self.pending is None and self.last is not None:
            self.pending = self.last
        self.wake.set()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.writer.close()


class _Record:
    """What the server knows about one proxy id; kept a while after it disconnects."""

    __slots__ = ("id", "node", "conn", "peer", "connected_at", "disconnected_at", "cfg", "hash",
                 "sent_version", "sent_at", "sent_mono", "requested_mono", "acked_version",
                 "acked_at", "nack", "nack_version", "last_response", "compute_error")

    def __init__(self, node: model.Node) -> None:
        self.id = node.id
        self.node = node
        self.conn: _Conn | None = None
        self.peer: str | None = None
        self.connected_at: float | None = None
        self.disconnected_at: float | None = None
        self.cfg: model.ProxyConfig | None = None  # the last snapshot sent, with its version
        self.hash: str | None = None  # its content hash
        self.sent_version: str | None = None
        self.sent_at: float | None = None
        self.sent_mono = 0.0
        self.requested_mono = 0.0
        self.acked_version: str | None = None
        self.acked_at: float | None = None
        self.nack: str | None = None
        self.nack_version: str | None = None
        self.last_response: str | None = None  # "ack" or "nack"
        self.compute_error: str | None = None

    def state(self) -> State:
        if self.sent_version is None:
            return "NOT_SENT"
        if self.last_response == "nack" and self.nack_version == self.sent_version:
            return "NACKED"
        if self.acked_version == self.sent_version:
            return "SYNCED"
        return "STALE"

    def status(self) -> ProxyStatus:
        nacked = self.state() == "NACKED"
        return ProxyStatus(
            proxy_id=self.id, node=self.node, connected=self.conn is not None,
            connected_at=self.connected_at, disconnected_at=self.disconnected_at, peer=self.peer,
            state=self.state(), sent_version=self.sent_version, sent_at=self.sent_at,
            acked_version=self.acked_version, acked_at=self.acked_at,
            nack=self.nack if nacked else None, nack_version=self.nack_version if nacked else None,
            compute_error=self.compute_error,
        )


class DiscoveryServer:
    """Serves snapshots computed by ``compute(node)`` to proxies holding ``token``.

    Use it from the event loop it was started on; ``request_push`` may also be called from
    any other thread. ``on_ack(AckEvent)`` is called for every ACK of the version last sent.
    Disconnected proxies stay in ``statuses()`` for ``forget_after`` seconds.
    """

    def __init__(self, compute: Callable[[model.Node], model.ProxyConfig], token: str,
                 debounce: float = 0.1, max_debounce: float = 1.0, *,
                 on_ack: Callable[[AckEvent], None] | None = None, forget_after: float = 300.0,
                 encode_cache_bytes: int = ENCODE_CACHE_BYTES) -> None:
        if not token:
            raise ValueError("the discovery server needs a non-empty token")
        self.compute = compute
        self._token = token.encode()
        self.debounce = debounce
        self.max_debounce = max(max_debounce, debounce)
        self.on_ack = on_ack
        self.on_pushed: Callable[[], None] | None = None  # called after every push
        self.forget_after = forget_after
        self.encode_cache_bytes = encode_cache_bytes
        # one per push, also used by the connections that arrive until the next push
        self._encoder = SnapshotEncoder(encode_cache_bytes)
        self._records: dict[str, _Record] = {}
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._handlers: set[asyncio.Task] = set()
        self._push_task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._first_request: float | None = None  # monotonic time of the oldest pending request
        self._last_request = 0.0
        self._reasons: list[str] = []
        self._pushing = False
        self._changed_ev: asyncio.Event | None = None
        self._seq = 0
        self.version = ""  # the latest version made
        # counters, for tests, benchmarks and the dashboard
        self.pushes = 0
        self.computes = 0
        self.compute_errors = 0
        self.snapshots_sent = 0
        self.deltas_sent = 0  # of the snapshots written, those sent as deltas
        self.resyncs = 0  # deltas a proxy could not assemble (then sent whole)
        self.last_push: dict[str, object] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 15010,
                    ssl: ssl_module.SSLContext | None = None) -> int:
        """Listen; return the bound port. ``ssl``: the mTLS seam (a server context that
        requires client certificates), plaintext when None."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._changed_ev = asyncio.Event()
        # a large backlog: after a control plane restart every proxy reconnects at once
        self._server = await asyncio.start_server(self._handle, host, port, ssl=ssl, backlog=4096)
        self._push_task = self._loop.create_task(self._push_loop())
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection (proxies keep serving what they have)."""
        if self._server is not None:
            self._server.close()
        if self._push_task is not None:
            self._push_task.cancel()
        for rec in self._records.values():
            if rec.conn is not None:
                rec.conn.close()
        tasks = [t for t in (*self._handlers, self._push_task) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ queries
    def statuses(self) -> list[ProxyStatus]:
        self._forget_old()
        return [r.status() for r in sorted(self._records.values(), key=lambda r: r.id)]

    def last_sent(self, proxy_id: str) -> model.ProxyConfig | None:
        """The snapshot the proxy was last sent (or, after a reconnection with the same content,
        the one it holds), version included."""
        rec = self._records.get(proxy_id)
        return rec.cfg if rec is not None else None

    def synced(self) -> bool:
        """No push pending or running, and every connected proxy acked the version last sent."""
        if self._first_request is not None or self._pushing:
            return False
        return all(r.state() == "SYNCED" for r in self._records.values() if r.conn is not None)

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until ``synced()``; False if it is not by ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.synced():
            remaining = deadline - loop.time()
            if remaining <= 0 or self._changed_ev is None:
                return False
            try:
                await asyncio.wait_for(self._changed_ev.wait(), remaining)
            except TimeoutError:
                return self.synced()
        return True

    # ------------------------------------------------------------------ pushes
    def request_push(self, reason: str = "") -> None:
        """Ask for every connected proxy to be recomputed (debounced). Thread-safe."""
        if self._loop is None:
            return  # not started: new connections compute their snapshot anyway
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.request_push, reason)
            return
        now = time.monotonic()
        if self._first_request is None:
            self._first_request = now
        self._last_request = now
        if len(self._reasons) < 100:
            self._reasons.append(reason)
        assert self._wake is not None
        self._wake.set()

    async def _push_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            while True:  # debounce: a quiet period, but never longer than max_debounce
                assert self._first_request is not None
                due = min(self._last_request + self.debounce, self._first_request + self.max_debounce)
                wait = due - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self._wake.clear()
            requested, reasons = self._first_request, self._reasons
            self._first_request, self._reasons = None, []
            self._pushing = True
            try:
                await self._push(requested, reasons)
            except Exception:  # pragma: no cover - a bug; the next request tries again
                log.exception("push failed")
            finally:
                self._pushing = False
                self._changed()
                if self.on_pushed is not None:
                    self.on_pushed()

    async def _push(self, requested: float, reasons: list[str]) -> None:
        started = time.monotonic()
        version = self._mint()
        # a new configuration has new objects: start a new encoder, and let the old one go
        self._encoder = enc = SnapshotEncoder(self.encode_cache_bytes)
        sent = errors = 0
        records = [r for r in self._records.values() if r.conn is not None]
        mark = time.monotonic()
        for rec in records:
            if rec.conn is not None:
                out = self._compute_one(rec)
                if out is None:
                    errors += 1
                elif out[1].hash != rec.hash:
                    self._send(rec, *out, version=version, requested=requested)
                    sent += 1
            if time.monotonic() - mark > SLICE:
                await asyncio.sleep(0)  # let ACKs, new connections and writers run
                mark = time.monotonic()
        self.pushes += 1
        self.last_push = {
            "version": version, "reasons": [r for r in reasons if r], "proxies": len(records),
            "sent": sent, "compute_errors": errors, "seconds": round(time.monotonic() - started, 6),
            "encoded_elements": enc.encoded, "encoded_bytes": enc.encoded_bytes,
        }
        log.info("push %s (%s): %d proxies, %d changed, %d compute errors", version,
                 ", ".join(r for r in reasons if r) or "-", len(records), sent, errors)

    def _mint(self) -> str:
        self._seq += 1
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        # milliseconds keep versions unique across control plane restarts (the counter
        # starts again at 1)
        self.version = f"{stamp}.{int(now * 1000) % 1000:03d}Z/{self._seq}"
        return self.version

    def _compute_one(self, rec: _Record) -> tuple[model.ProxyConfig, PreparedSnapshot] | None:
        """(config, the snapshot prepared for the wire, with its content hash), or None if
        compute failed (logged; the proxy keeps what it has)."""
        self.computes += 1
        try:
            cfg = self.compute(rec.node)
            if not isinstance(cfg, model.ProxyConfig):
                raise TypeError(f"compute returned {type(cfg).__name__}, not a ProxyConfig")
            prepared = self._encoder.prepare(cfg)
        except Exception as e:
            self.compute_errors += 1
            rec.compute_error = f"{type(e).__name__}: {e}"
            log.exception("computing the snapshot of %s failed; it keeps its previous one", rec.id)
            return None
        rec.compute_error = None
        return cfg, prepared

    def _send(self, rec: _Record, cfg: model.ProxyConfig, prepared: PreparedSnapshot, *, version: str,
              requested: float) -> None:
        conn = rec.conn
        assert conn is not None
        conn.pending = (prepared, version)  # encoded by the writer when it takes it
        conn.wake.set()
        stored = copy.copy(cfg)
        stored.version = version
        rec.cfg, rec.hash, rec.sent_version = stored, prepared.hash, version
        rec.sent_at, rec.sent_mono, rec.requested_mono = time.time(), time.monotonic(), requested
        rec.nack = rec.nack_version = None
        self.snapshots_sent += 1
        self._changed()

    # ------------------------------------------------------------------ connections
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        set_keepalive(writer.get_extra_info("socket"))
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        rec: _Record | None = None
        conn: _Conn | None = None
        try:
            try:
                data = await asyncio.wait_for(read_frame(reader, MAX_CLIENT_MESSAGE), HELLO_TIMEOUT)
            except TimeoutError:
                await self._refuse(writer, f"no hello within {HELLO_TIMEOUT:g}s")
                return
            if data is None:
                return
            try:
                hello = msgspec.json.decode(data, type=ClientMessage)
            except msgspec.DecodeError as e:
                await self._refuse(writer, f"malformed hello: {e}")
                return
            if hello.type != "hello":
                await self._refuse(writer, f"expected a hello, got {hello.type!r}")
                return
            if hello.protocol != PROTOCOL_VERSION:
                await self._refuse(writer, f"unsupported protocol version {hello.protocol} "
                                           f"(this control plane speaks {PROTOCOL_VERSION})")
                return
            if not hmac.compare_digest(hello.token.encode(), self._token):
                log.warning("refused %s: bad token", peer)
                await self._refuse(writer, "authentication failed: bad token")
                return
            try:
                node = msgspec.json.decode(hello.node or b"{}", type=model.Node)
            except msgspec.DecodeError as e:
                await self._refuse(writer, f"invalid node: {e}")
                return
            conn = _Conn(writer, peer, delta=hello.delta)
            rec = self._attach(node, conn)
            writer.write(encode({"type": "welcome", "node_id": node.id}))
            self._first_snapshot(rec, hello.version, hello.hash)
            conn.task = asyncio.get_running_loop().create_task(self._write_loop(conn))
            while True:
                data = await read_frame(reader, MAX_CLIENT_MESSAGE)
                if data is None:
                    break
                msg = msgspec.json.decode(data, type=ClientMessage)
                if msg.type == "ack":
                    self._on_ack(rec, msg.version)
                elif msg.type == "nack" and msg.resync:
                    log.info("%s could not assemble delta %s (%s); sending it whole", rec.id, msg.version, msg.error)
                    self.resyncs += 1
                    conn.resync()
                elif msg.type == "nack":
                    self._on_nack(rec, msg.version, msg.error)
        except (ConnectionError, ProtocolError, msgspec.DecodeError) as e:
            log.info("connection from %s (%s) ended: %s", peer, rec.id if rec else "-", e)
        except asyncio.CancelledError:
            pass
        finally:
            if conn is not None:
                conn.close()
                if rec is not None and rec.conn is conn:
                    rec.conn = None
                    rec.disconnected_at = time.time()
                    log.info("%s disconnected", rec.id)
                    self._changed()
            else:
                writer.close()
            self._handlers.discard(task)

    async def _refuse(self, writer: asyncio.StreamWriter, error: str) -> None:
        writer.write(encode({"type": "error", "error": error}))
        try:
            await asyncio.wait_for(writer.drain(), 1.0)
        except (ConnectionError, TimeoutError):
            pass
        writer.close()

    def _attach(self, node: model.Node, conn: _Conn) -> _Record:
        rec = self._records.get(node.id)
        if rec is None:
            rec = self._records[node.id] = _Record(node)
        elif rec.conn is not None:
            log.warning("%s connected again from %s; closing its connection from %s",
                        node.id, conn.peer, rec.conn.peer)
            rec.conn.close()
        rec.node, rec.conn, rec.peer = node, conn, conn.peer
        rec.connected_at, rec.disconnected_at = time.time(), None
        log.info("%s connected from %s", node.id, conn.peer)
        return rec

    def _first_snapshot(self, rec: _Record, held_version: str, held_hash: str | None) -> None:
        """Send a newly connected proxy its snapshot, unless it already holds that content."""
        now = time.monotonic()
        rec.acked_version = held_version or None  # what the proxy says it runs
        rec.last_response = None
        out = self._compute_one(rec)
        if out is None:
            self._changed()
            return
        cfg, prepared = out
        digest = prepared.hash
        if held_hash is not None and held_hash == digest:
            stored = copy.copy(cfg)
            stored.version = held_version
            rec.cfg, rec.hash = stored, digest
            rec.sent_version, rec.sent_at, rec.sent_mono = held_version, time.time(), now
            rec.acked_at = time.time()
            rec.nack = rec.nack_version = None
            self._changed()
            return
        if rec.hash == digest and rec.sent_version is not None:
            version = rec.sent_version  # the content this proxy was already sent: same name
        else:
            version = self._mint()
        self._send(rec, cfg, prepared, version=version, requested=now)

    async def _write_loop(self, conn: _Conn) -> None:
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                pending, conn.pending = conn.pending, None
                if pending is not None:
                    prepared, version = pending
                    if conn.base is not None:
                        msg = prepared.delta_message(version, *conn.base)
                        self.deltas_sent += 1
                    else:
                        msg = prepared.message(version, digests=conn.delta)
                    if conn.delta:
                        conn.base = (prepared.hash, prepared.digests)
                        conn.last = pending
                    del pending, prepared  # the pieces may go once the message is made
                    conn.writer.write(msg)
                    del msg
                    await conn.writer.drain()
        except ConnectionError:
            conn.writer.close()  # the reader sees the end and cleans up
        except Exception:  # pragma: no cover - a bug; the proxy reconnects and gets a fresh snapshot
            log.exception("writing to %s failed; closing the connection", conn.peer)
            conn.writer.close()

    def _on_ack(self, rec: _Record, version: str) -> None:
        rec.acked_version, rec.acked_at, rec.last_response = version, time.time(), "ack"
        if version == rec.sent_version:
            rec.nack = rec.nack_version = None
            if self.on_ack is not None:
                try:
                    self.on_ack(AckEvent(proxy_id=rec.id, version=version, requested_at=rec.requested_mono,
                                         sent_at=rec.sent_mono, acked_at=time.monotonic()))
                except Exception:
                    log.exception("on_ack hook failed")
        self._changed()

    def _on_nack(self, rec: _Record, version: str, error: str) -> None:
        rec.nack, rec.nack_version, rec.last_response = error or "rejected", version, "nack"
        log.warning("%s rejected version %s: %s", rec.id, version, error)
        self._changed()

    def _changed(self) -> None:
        """Wake whoever waits in wait_synced."""
        if self._changed_ev is not None:
            self._changed_ev.set()
            self._changed_ev = asyncio.Event()

    def _forget_old(self) -> None:
        cutoff = time.time() - self.forget_after
        for pid in [r.id for r in self._records.values()
                    if r.conn is None and r.disconnected_at is not None and r.disconnected_at < cutoff]:
            del self._records[pid]
