"""Derived data computed once per immutable object, shared by ConfigView and Registry."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Memoized:
    """``memo(key, factory)``: the value computed once per object (indices, translation
    caches); ``factory`` must be a pure function of the object (and of immutable objects
    named in ``key``). Safe to call from several threads: a race computes twice and keeps
    the first value."""

    def __init__(self) -> None:
        self._memo: dict[Any, Any] = {}
        self._memo_lock = threading.Lock()

    def memo(self, key: Any, factory: Callable[[], T]) -> T:
        try:
            return self._memo[key]
        except KeyError:
            pass
        value = factory()
        with self._memo_lock:
            return self._memo.setdefault(key, value)

    def drop_caches(self) -> None:
        """Forget the derived data. The caches refer back to their object, so an object
        replaced by a newer one is freed by reference counting once they are dropped, without
        waiting for a cyclic garbage collection. Later ``memo`` calls compute again."""
        with self._memo_lock:
            self._memo = {}
