"""Keeping CPython's cyclic garbage collector off long-lived configuration.

The control plane holds the whole configuration several times over (the store, the view,
the registry, translate's caches, the encoder's pieces): hundreds of thousands of tracked
objects. Every configuration change allocates a new generation of them, which soon triggers
a full (generation 2) collection, and a full collection walks every tracked object: a
stop-the-world pause of a quarter of a second at 1000 services, on the path from ``apply``
to the proxies' ACKs. Almost none of it is garbage: the old generation is freed by reference
counting as soon as the new one replaces it.

:class:`LongLivedGC` moves what is alive once a change has settled into the permanent
generation (``gc.freeze()``), so that later collections skip it, and runs the full
collection that frees any cyclic garbage frozen along the way only when the process has been
quiet for a while (no change for ``quiet`` seconds), at most every ``interval`` seconds, or
when the frozen objects have grown to twice what survived the last full collection (a
process that is never quiet must not grow without bound). The control plane also breaks
the cycles of a replaced generation itself (``drop_caches``), so that little is left for
these collections to find.
"""

from __future__ import annotations

import asyncio
import gc
import time


class LongLivedGC:
    def __init__(self, interval: float = 60.0, quiet: float = 5.0) -> None:
        self.interval = interval
        self.quiet = quiet
        self.last_change = time.monotonic()
        self.full_collections = 0
        self._survivors = 0  # objects frozen after the last full collection
        self._handle: asyncio.TimerHandle | None = None

    def settled(self) -> None:
        """A change is done (its objects are built): keep them out of future collections."""
        self.last_change = time.monotonic()
        gc.freeze()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.collect()  # the baseline: what is alive once started
        self.last_change = time.monotonic()
        self._handle = loop.call_later(self.interval, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def collect(self) -> None:
        """A full collection of everything, frozen or not; then freeze what survived."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._survivors = gc.get_freeze_count()
        self.full_collections += 1

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        wait = self.interval
        if now - self.last_change >= self.quiet or gc.get_freeze_count() > 2 * self._survivors + 100_000:
            self.collect()
        else:
            wait = self.quiet  # busy: look again soon
        self._handle = loop.call_later(wait, self._tick, loop)
