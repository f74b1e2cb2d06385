"""Load balancing: pick the upstream host of a cluster for one request attempt.

Sans-IO and on the hot path. Everything that depends only on the host set (the healthy
set, a weighted round-robin schedule, a hash ring, a Maglev table) is computed when the
set changes (:meth:`LoadBalancer.update_hosts`, :meth:`LoadBalancer.hosts_changed`); a
pick (:meth:`LoadBalancer.choose`) then costs a few list lookups and at most two calls of
the injected ``rand``.

Wiring, as the pipeline is expected to do it::

    hosts = reconcile_hosts([], endpoints)          # Host objects, one per endpoint
    lb = make_lb(cluster, hosts)
    od = OutlierDetector(cluster.outlier_detection, hosts, on_change=lb.hosts_changed)
    ...
    # on an endpoint update: keep the Host objects (and their runtime state) by key
    hosts = reconcile_hosts(hosts, new_endpoints)
    od.update_hosts(hosts)
    lb.update_hosts(hosts)
    ...
    host = lb.choose(req)                           # None -> 503, response flag UH
    host = lb.choose(req, exclude=previous_host)    # on a retry

Per-host runtime state lives on :class:`Host` (``__slots__``): ``active_requests`` (the
pipeline increments it when a request is sent and decrements it when it ends), ``ejected``
and the ``od_*`` fields owned by :class:`pilotfish.proxy.outlier.OutlierDetector`.

Healthy set and panic (Envoy's ``healthy_panic_threshold``, Istio's ``minHealthPercent``):
a host is healthy when its EDS ``health`` is ``HEALTHY`` and it is not ejected. If the panic
threshold is above 0 and ``100 * healthy / all < threshold`` the balancer is in panic and
picks among all hosts (unhealthy, draining and ejected ones included). With threshold 0
there is never a panic: no healthy host means no host (``choose`` returns ``None``). The
threshold is the cluster's ``outlier_detection.min_health_percent`` (Istio emits 0 when
``minHealthPercent`` is unset); a cluster without outlier detection also gets 0 here,
where Envoy's own default would be 50% (Istio leaves it so, but then only sends healthy
endpoints unless it forces the threshold to 0). ``make_lb(panic_threshold=...)`` overrides.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pilotfish.proxy import model

if TYPE_CHECKING:
    from pilotfish.proxy.http import Request

__all__ = [
    "Host",
    "LoadBalancer",
    "RoundRobinLB",
    "LeastRequestLB",
    "RandomLB",
    "RingHashLB",
    "MaglevLB",
    "make_lb",
    "reconcile_hosts",
    "hash64",
    "hash_key_for",
    "compile_hash_key",
    "cookie_value",
    "new_cookie",
]

_MASK64 = (1 << 64) - 1
_TWO64 = float(1 << 64)
MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's default maximum_ring_size
_GATEWAY = (502, 503, 504)


_BLAKE8 = hashlib.blake2b(digest_size=8)  # copying a primed object beats constructing one


def hash64(data: str | bytes) -> int:
    """A 64-bit hash that is the same in every process (BLAKE2b, 8-byte digest).

    Python's ``hash()`` of ``str`` is salted per process, so it must not be used for
    consistent hashing: two sidecars must map the same key to the same host.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    h = _BLAKE8.copy()
    h.update(data)
    return int.from_bytes(h.digest(), "little")


def _hash128(data: str) -> tuple[int, int]:
    d = hashlib.blake2b(data.encode("utf-8", "surrogateescape"), digest_size=16).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def _mix64(x: int) -> int:
    """splitmix64 finaliser: spreads a re-hash for retry host selection."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _host_key(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --------------------------------------------------------------------------- hosts


class Host:
    """One upstream endpoint of a cluster, with its runtime state.

    ``weight``/``labels``/``locality``/``health`` come from EDS; ``active_requests`` is
    maintained by the pipeline; ``ejected`` and the ``od_*`` fields belong to the outlier
    detector (read them, do not write them).
    """

    __slots__ = (
        "address",
        "port",
        "weight",
        "labels",
        "locality",
        "health",
        "key",
        "active_requests",
        "ejected",
        # outlier detection state (pilotfish.proxy.outlier)
        "od_5xx",
        "od_gateway",
        "od_local",
        "od_backoff",
        "od_ejections",
        "od_ejected_at",
        "od_unejected_tick",
        "od_ejection_type",
    )

    def __init__(
        self,
        address: str,
        port: int,
        weight: int = 1,
        labels: dict[str, str] | None = None,
        locality: str | None = None,
        health: str = "HEALTHY",
    ) -> None:
        if weight < 1:
            raise ValueError(f"host {address}:{port}: weight must be at least 1")
        self.address = address
        self.port = port
        self.weight = weight
        self.labels = labels if labels is not None else {}
        self.locality = locality
        self.health = health
        self.key = _host_key(address, port)
        self.active_requests = 0
        self.ejected = False
        self.od_5xx = 0  # consecutive 5xx (and local-origin failures unless split)
        self.od_gateway = 0  # consecutive 502/503/504 (and local-origin failures unless split)
        self.od_local = 0  # consecutive local-origin failures (split mode only)
        self.od_backoff = 0  # ejection time multiplier
        self.od_ejections = 0  # times ejected, ever
        self.od_ejected_at: float | None = None  # clock time of the last ejection
        self.od_unejected_tick: int | None = None  # sweep index of the last unejection
        self.od_ejection_type: str | None = None  # why it was last ejected

    @classmethod
    def from_endpoint(cls, ep: model.Endpoint) -> Host:
        return cls(ep.address, ep.port, ep.weight, dict(ep.labels), ep.locality, ep.health)

    @property
    def healthy(self) -> bool:
        """Usable outside panic mode: EDS says HEALTHY and outlier detection has not ejected it."""
        return self.health == "HEALTHY" and not self.ejected

    def __repr__(self) -> str:
        flags = "" if self.health == "HEALTHY" else f" {self.health}"
        if self.ejected:
            flags += " ejected"
        return f"Host({self.key} w={self.weight}{flags})"


def reconcile_hosts(current: Iterable[Host], endpoints: Iterable[model.Endpoint]) -> list[Host]:
    """The host list for ``endpoints``, reusing the ``Host`` objects of ``current`` by key.

    Reuse keeps each surviving host's runtime state (active requests, ejection, outlier
    counters); weight, labels, locality and health are refreshed from the endpoint. A
    repeated address:port keeps its first occurrence.
    """
    by_key = {h.key: h for h in current}
    out: list[Host] = []
    seen: set[str] = set()
    for ep in endpoints:
        key = _host_key(ep.address, ep.port)
        if key in seen:
            continue
        seen.add(key)
        h = by_key.get(key)
        if h is None:
            h = Host.from_endpoint(ep)
        else:
            h.weight = ep.weight
            h.labels = dict(ep.labels)
            h.locality = ep.locality
            h.health = ep.health
        out.append(h)
    return out


# --------------------------------------------------------------------------- hash keys


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header (first one wins).
    Surrounding double quotes are removed, as Envoy does."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        k, eq, v = part.partition("=")
        if eq and k.strip() == name:
            v = v.strip()
            if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                v = v[1:-1]
            return v
    return None


def compile_hash_key(policy: model.HashPolicy) -> Callable[[Request], int | None]:
    """A function ``req -> hash key | None`` for ``policy`` (see :func:`hash_key_for`),
    with the policy's branching and name normalisation done once."""
    if policy.header_name is not None:
        header = policy.header_name.lower()

        def by_header(req: Request) -> int | None:
            v = req.headers.get(header)
            return None if v is None else hash64(v)

        return by_header
    if policy.cookie is not None:
        name = policy.cookie

        def by_cookie(req: Request) -> int | None:
            v = cookie_value(req.headers.get("cookie"), name)
            return None if v is None else hash64(v)

        return by_cookie
    if policy.use_source_ip:

        def by_source_ip(req: Request) -> int | None:
            return hash64(req.source_ip) if req.source_ip else None

        return by_source_ip
    param = policy.query_parameter

    def by_query(req: Request) -> int | None:
        v = req.query_params.get(param) if param is not None else None
        return None if v is None else hash64(v)

    return by_query


def hash_key_for(policy: model.HashPolicy, req: Request) -> int | None:
    """The consistent-hash key of ``req`` under Istio's ``consistentHash`` policy.

    ``None`` when the request lacks the key (header, cookie, query parameter or source
    address absent); the balancer then picks at random, as Envoy does. For a cookie policy
    with a ``cookie_ttl`` Envoy generates the cookie instead: see :func:`new_cookie`.
    """
    return compile_hash_key(policy)(req)


def new_cookie(policy: model.HashPolicy, req: Request) -> tuple[int, str]:
    """Generate the affinity cookie Envoy sets when a cookie policy has a TTL and the
    request carries no such cookie.

    Returns ``(hash_key, set_cookie_value)``: pass ``hash_key`` to ``choose`` and add
    ``("set-cookie", set_cookie_value)`` to the response headers. As in Envoy the value is
    derived from the downstream connection's addresses (so concurrent requests on one
    connection get the same cookie), ``Max-Age`` is omitted for a zero TTL (a session
    cookie), and the cookie is ``HttpOnly``.
    """
    if policy.cookie is None:
        raise ValueError("new_cookie needs a cookie hash policy")
    src = _host_key(req.source_ip, req.source_port)
    dst = _host_key(req.dest_ip, req.dest_port)
    value = f"{hash64(src + dst):016x}"
    parts = [f'{policy.cookie}="{value}"']
    ttl = policy.cookie_ttl
    if ttl:
        parts.append(f"Max-Age={int(ttl)}")
    if policy.cookie_path:
        parts.append(f"Path={policy.cookie_path}")
    parts.append("HttpOnly")
    return hash64(value), "; ".join(parts)


# --------------------------------------------------------------------------- balancers


def _uniform(hosts: list[Host]) -> bool:
    w = hosts[0].weight
    return all(h.weight == w for h in hosts)


class LoadBalancer:
    """Common part: the healthy set, panic mode and the change hooks.

    Subclasses implement ``_rebuild(available)`` (called only when the set of available
    hosts or their weights changed) and ``choose``.
    """

    policy = ""

    def __init__(
        self,
        cluster: model.Cluster,
        hosts: Iterable[Host],
        rand: Callable[[], float] = random.random,
        panic_threshold: float | None = None,
    ) -> None:
        self.cluster_name = cluster.name
        if panic_threshold is None:
            od = cluster.outlier_detection
            panic_threshold = od.min_health_percent if od is not None else 0
        self.panic_threshold = panic_threshold
        self.hash_policy = cluster.hash_policy
        self._hash_fn = (
            compile_hash_key(cluster.hash_policy) if cluster.hash_policy is not None else None
        )
        self.rand = rand
        self.hosts: list[Host] = []
        self.healthy: list[Host] = []
        self.available: list[Host] = []
        self.panic = False
        self._signature: tuple | None = None
        self._setup(cluster)
        self.update_hosts(hosts)

    def _setup(self, cluster: model.Cluster) -> None:
        pass

    def update_hosts(self, hosts: Iterable[Host]) -> None:
        """Replace the host list (endpoint update), then recompute."""
        self.hosts = list(hosts)
        self.hosts_changed()

    def hosts_changed(self) -> None:
        """Recompute the healthy set after a health, ejection or weight change.

        Cheap when nothing that matters changed: the per-policy structures are rebuilt only
        when the available hosts or their weights differ from the last build.
        """
        hosts = self.hosts
        healthy = [h for h in hosts if h.health == "HEALTHY" and not h.ejected]
        n = len(hosts)
        t = self.panic_threshold
        self.panic = t > 0 and n > 0 and 100 * len(healthy) < t * n
        self.healthy = healthy
        avail = hosts if self.panic else healthy
        self.available = avail
        sig = tuple((id(h), h.weight) for h in avail)
        if sig != self._signature:
            self._signature = sig
            self._built_for = avail  # keeps those hosts alive, so their ids stay unique
            self._rebuild(avail)

    def _rebuild(self, avail: list[Host]) -> None:
        raise NotImplementedError

    def hash_key(self, req: Request) -> int | None:
        """The request's consistent-hash key under the cluster's hash policy (``None`` when
        the cluster has none or the request lacks the key)."""
        fn = self._hash_fn
        return None if fn is None else fn(req)

    def choose(
        self, req: Request | None = None, hash_key: int | None = None, exclude: Host | None = None
    ) -> Host | None:
        """The host for this attempt, or ``None`` when no host is available (503, ``UH``).

        ``exclude``: the host of the previous attempt; another host is returned when one is
        available (Envoy's ``previous_hosts`` retry predicate, which Istio enables).
        ``hash_key``/``req`` matter to the consistent-hash policies only.
        """
        raise NotImplementedError

    def _other_than(self, hosts: list[Host], start: int, exclude: Host) -> Host:
        """The first host from ``start`` (wrapping) that is not ``exclude``, else ``exclude``."""
        n = len(hosts)
        for j in range(1, n + 1):
            h = hosts[(start + j) % n]
            if h is not exclude:
                return h
        return exclude


class _Edf:
    """Earliest-deadline-first scheduler over weighted hosts (Envoy's EDF scheduler).

    Each pick takes the entry with the smallest deadline and re-queues it at that deadline
    plus ``1 / weight``. With ``least_request`` the weight is Envoy's effective weight
    ``weight / (active_requests + 1)`` (``active_request_bias`` 1.0), evaluated when the
    host is picked.
    """

    __slots__ = ("heap", "seq", "least_request")

    def __init__(self, hosts: list[Host], least_request: bool) -> None:
        self.least_request = least_request
        self.heap = [(0.5 / h.weight, i, h) for i, h in enumerate(hosts)]
        heapq.heapify(self.heap)
        self.seq = len(hosts)

    def pick(self, exclude: Host | None = None) -> Host:
        heap = self.heap
        deadline, _, h = heap[0]
        skipped = None
        if h is exclude and len(heap) > 1:
            # the next host in deadline order; the excluded one keeps its place
            skipped = heapq.heappop(heap)
            deadline, _, h = heap[0]
        step = (h.active_requests + 1) / h.weight if self.least_request else 1.0 / h.weight
        self.seq += 1
        heapq.heapreplace(heap, (deadline + step, self.seq, h))
        if skipped is not None:
            heapq.heappush(heap, skipped)
        return h


def _edf_schedule(hosts: list[Host], weights: list[int], total: int) -> list[Host]:
    """One period of a weighted round-robin: ``total`` picks where host i appears
    ``weights[i]`` times, spread out (its k-th pick has deadline ``(k + 1/2) / w``; ties go
    to the host listed first)."""
    heap = [(0.5 / w, i, 0) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    out: list[Host] = []
    append = out.append
    for _ in range(total):
        _, i, k = heap[0]
        append(hosts[i])
        k += 1
        heapq.heapreplace(heap, ((k + 0.5) / weights[i], i, k))
    return out


class RoundRobinLB(LoadBalancer):
    """Weighted round robin over a precomputed schedule.

    Equal weights: the schedule is the host list. Otherwise one period of an EDF schedule
    (weights reduced by their gcd) of at most ``max_schedule`` entries; beyond that, an
    online EDF heap (O(log n) per pick). The starting position is random after each rebuild
    (Envoy also randomises it, so that proxies do not move in lockstep).
    """

    policy = "ROUND_ROBIN"
    max_schedule = 65536

    def _rebuild(self, avail: list[Host]) -> None:
        self._edf: _Edf | None = None
        self._distinct = len(avail)
        if not avail or _uniform(avail):
            sched = list(avail)
        else:
            weights = [h.weight for h in avail]
            g = math.gcd(*weights)
            weights = [w // g for w in weights]
            total = sum(weights)
            if total <= self.max_schedule:
                sched = _edf_schedule(avail, weights, total)
            else:
                sched = []
                self._edf = _Edf(avail, least_request=False)
        self._sched = sched
        self._n = len(sched)
        self._idx = int(self.rand() * self._n) if self._n > 1 else 0

    def choose(
        self, req: Request | None = None, hash_key: int | None = None, exclude: Host | None = None
    ) -> Host | None:
        n = self._n
        if n:
            i = self._idx
            h = self._sched[i]
            self._idx = i + 1 if i + 1 < n else 0
            if h is exclude and self._distinct > 1:
                # take the next different host in the schedule and continue after it
                sched = self._sched
                for _ in range(n):
                    i = i + 1 if i + 1 < n else 0
                    if sched[i] is not exclude:
                        h = sched[i]
                        break
                self._idx = i + 1 if i + 1 < n else 0
            return h
        edf = self._edf
        if edf is None:
            return None
        return edf.pick(exclude)


class LeastRequestLB(LoadBalancer):
    """Envoy's LEAST_REQUEST (Istio's default policy).

    Equal weights: power of two choices: two hosts drawn at random (with replacement), the
    one with fewer ``active_requests`` wins, the first on a tie. Unequal weights: Envoy's
    EDF scheduler with effective weight ``weight / (active_requests + 1)``.
    """

    policy = "LEAST_REQUEST"

    def _rebuild(self, avail: list[Host]) -> None:
        self._hosts = list(avail)
        self._n = len(avail)
        self._edf = None if self._n < 2 or _uniform(avail) else _Edf(avail, least_request=True)

    def choose(
        self, req: Request | None = None, hash_key: int | None = None, exclude: Host | None = None
    ) -> Host | None:
        n = self._n
        if n > 1:
            edf = self._edf
            if edf is None:
                hosts = self._hosts
                r = self.rand
                a = hosts[int(r() * n)]
                b = hosts[int(r() * n)]
                h = b if b.active_requests < a.active_requests else a
                if h is exclude:
                    other = a if h is b else b
                    if other is not exclude:
                        return other
                    return self._p2c_without(exclude)
                return h
            return edf.pick(exclude)
        return self._hosts[0] if n else None

    def _p2c_without(self, exclude: Host) -> Host:
        hosts = [h for h in self._hosts if h is not exclude]
        n = len(hosts)
        r = self.rand
        a = hosts[int(r() * n)]
        b = hosts[int(r() * n)]
        return b if b.active_requests < a.active_requests else a


class RandomLB(LoadBalancer):
    """A random available host; with unequal weights, weighted by them."""

    policy = "RANDOM"

    def _rebuild(self, avail: list[Host]) -> None:
        self._hosts = list(avail)
        self._n = len(avail)
        self._cum: list[int] | None = None
        if self._n > 1 and not _uniform(avail):
            acc, cum = 0, []
            for h in avail:
                acc += h.weight
                cum.append(acc)
            self._cum = cum
            self._total = acc

    def choose(
        self, req: Request | None = None, hash_key: int | None = None, exclude: Host | None = None
    ) -> Host | None:
        n = self._n
        if not n:
            return None
        cum = self._cum
        if cum is None:
            i = int(self.rand() * n)
        else:
            i = bisect.bisect_right(cum, int(self.rand() * self._total))
        h = self._hosts[i]
        if h is exclude and n > 1:
            # another draw among the others, then a deterministic fallback
            j = int(self.rand() * n)
            h = self._hosts[j]
            if h is exclude:
                h = self._other_than(self._hosts, j, exclude)
        return h


class _HashLB(LoadBalancer):
    """Common part of RING_HASH and MAGLEV: the hash key of a request."""

    def _key(self, req: Request | None, hash_key: int | None) -> int:
        if hash_key is None:
            fn = self._hash_fn
            if req is not None and fn is not None:
                hash_key = fn(req)
            if hash_key is None:
                # no key: a random point, as Envoy does (weights still respected)
                return int(self.rand() * _TWO64) & _MASK64
        return hash_key & _MASK64


class RingHashLB(_HashLB):
    """Ketama-style consistent hash ring (Envoy's RING_HASH).

    Hosts are placed on a 64-bit ring at ``hash64(f"{ip:port}_{i}")``; the number of
    entries per host is proportional to its weight, scaled so that the lightest host gets
    at least ``ring_size * its share`` entries (Envoy's ``minimum_ring_size``), capped at
    :data:`MAX_RING_SIZE`. A key maps to the first entry at or after it, wrapping. Hosts are
    laid out in key order so that every proxy builds the same ring whatever the EDS order.
    """

    policy = "RING_HASH"

    def _setup(self, cluster: model.Cluster) -> None:
        if cluster.ring_size < 1:
            raise ValueError(f"cluster {cluster.name}: ring_size must be at least 1")
        self.ring_size = cluster.ring_size

    def _rebuild(self, avail: list[Host]) -> None:
        self._single = avail[0] if len(avail) == 1 else None
        self._hashes: list[int] = []
        self._ring: list[Host] = []
        if len(avail) < 2:
            return
        hosts = sorted(avail, key=lambda h: h.key)
        total = sum(h.weight for h in hosts)
        min_share = min(h.weight for h in hosts) / total
        scale = min(math.ceil(min_share * self.ring_size) / min_share, MAX_RING_SIZE)
        entries: list[tuple[int, int]] = []
        target = 0.0
        count = 0
        for idx, h in enumerate(hosts):
            target += scale * h.weight / total
            key = h.key
            i = 0
            while count < target:
                entries.append((hash64(f"{key}_{i}"), idx))
                i += 1
                count += 1
        entries.sort()
        self._hashes = [e[0] for e in entries]
        self._ring = [hosts[e[1]] for e in entries]

    def choose(
        self, req: Request | None = None, hash_key: int | None = None, exclude: Host | None = None
    ) -> Host | None:
        single = self._single
        if single is not None:
            return single
        ring = self._ring
        if not ring:
            return None
        i = bisect.bisect_left(self._hashes, self._key(req, hash_key))
        if i == len(ring):
            i = 0
        h = ring[i]
        if h is exclude:
            # as if the excluded host were not on the ring: walk on to the next host
            h = self._other_than(ring, i, exclude)
        return h


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def maglev_table(keys: list[str], weights: list[int], size: int) -> list[int]:
    """The Maglev lookup table (Eisenbud et al., 2016), weighted as Envoy weights it.

    Returns, for each of the ``size`` slots (``size`` prime), the index of the owning host.
    Host i has offset ``h1 % size`` and skip ``h2 % (size - 1) + 1`` from a 128-bit hash of
    its key; its preference list is ``offset + j * skip``. Hosts take turns claiming their
    next free preferred slot; a host whose weight is 1/k of the heaviest takes a turn every
    k rounds, so slot counts are proportional to weights.
    """
    m = size
    n = len(keys)
    offsets: list[int] = []
    skips: list[int] = []
    for k in keys:
        a, b = _hash128(k)
        offsets.append(a % m)
        skips.append(b % (m - 1) + 1)
    table = [-1] * m
    pos = offsets[:]  # slot of each host's next preference
    wmax = max(weights)
    targets = [0] * n
    free = m
    it = 0
    while True:
        it += 1
        for i in range(n):
            if it * weights[i] < targets[i]:
                continue
            targets[i] += wmax
            c = pos[i]
            s = skips[i]
            while table[c] >= 0:
                c += s
                if c >= m:
                    c -= m
            table[c] = i
            c += s
            pos[i] = c - m if c >= m else c
            free -= 1
            if free == 0:
                return table


class MaglevLB(_HashLB):
    """Envoy's MAGLEV: a lookup table of ``maglev_table_size`` slots (a prime, 65537 by
    default); a key maps to slot ``key % size``. Hosts are ordered by key before the build
    so that every proxy builds the same table. A rebuild of the default table costs tens of
    milliseconds in Python: it happens on endpoint and ejection changes only."""

    policy = "MAGLEV"

    def _setup(self, cluster: model.Cluster) -> None:
        if not _is_prime(cluster.maglev_table_size):
            raise ValueError(
                f"cluster {cluster.name}: maglev_table_size must be a prime number,"
                f" got {cluster.maglev_table_size}"
            )
        self.table_size = cluster.maglev_table_size

    def _rebuild(self, avail: list[Host]) -> None:
        self._single = avail[0] if len(avail) == 1 else None
        self._table: list[Host] = []
        self._distinct = len(avail)
        if len(avail) < 2:
            return
        hosts = sorted(avail, key=lambda h: h.key)
        idx = maglev_table([h.key for h in hosts], [h.weight for h in hosts], self.table_size)
        self._table = [hosts[i] for i in idx]

    def choose(
        self, req: Request | None = None, hash_key: int | None = None, exclude: Host | None = None
    ) -> Host | None:
        single = self._single
        if single is not None:
            return single
        table = self._table
        if not table:
            return None
        key = self._key(req, hash_key)
        m = self.table_size
        h = table[key % m]
        if h is exclude:
            # re-hash a few times (spreads the excluded host's keys evenly), then scan
            for attempt in range(1, 5):
                key = _mix64(key ^ attempt)
                h = table[key % m]
                if h is not exclude:
                    return h
            h = self._other_than(table, key % m, exclude)
        return h


_POLICIES: dict[str, type[LoadBalancer]] = {
    "ROUND_ROBIN": RoundRobinLB,
    "LEAST_REQUEST": LeastRequestLB,
    "RANDOM": RandomLB,
    "RING_HASH": RingHashLB,
    "MAGLEV": MaglevLB,
    # ORIGINAL_DST clusters connect to the original destination and should bypass the
    # balancer; if one is built anyway it round-robins over whatever hosts it is given.
    "PASSTHROUGH": RoundRobinLB,
}


def make_lb(
    cluster: model.Cluster,
    hosts: Iterable[Host],
    rand: Callable[[], float] = random.random,
    panic_threshold: float | None = None,
) -> LoadBalancer:
    """The balancer for ``cluster.lb_policy`` over ``hosts``.

    ``rand`` returns floats in [0, 1) (inject a seeded ``random.Random().random`` in
    tests). ``panic_threshold`` overrides the cluster's (its outlier detection's
    ``min_health_percent``, else 0).
    """
    cls = _POLICIES.get(cluster.lb_policy)
    if cls is None:
        raise ValueError(f"cluster {cluster.name}: unknown lb_policy {cluster.lb_policy!r}")
    return cls(cluster, hosts, rand, panic_threshold)
