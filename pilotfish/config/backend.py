"""Where the config store keeps its objects: the :class:`Backend` seam.

A backend holds records (one per object) and the store's resource-version counter. The store
calls :meth:`Backend.commit` once per change set (an ``apply`` of several documents, or a
delete); a backend applies it all or nothing. :class:`MemoryBackend` is for tests and
throw-away control planes; :class:`pilotfish.config.filestore.FileBackend` persists to a state
directory. etcd and Kubernetes backends can implement the same three methods later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One stored object as a backend keeps it."""

    group: str
    kind: str
    namespace: str | None
    name: str
    data: dict[str, Any]
    resource_version: int
    generation: int
    created: str
    uid: str
    file: str | None = None
    line: int | None = None

    @property
    def key(self) -> RecordKey:
        return (self.group, self.kind, self.namespace, self.name)


RecordKey = tuple[str, str, "str | None", str]


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    resource_version: int = 0
    records: list[Record] = []


class Backend(Protocol):
    """Storage behind :class:`~pilotfish.config.store.Store`."""

    def load(self) -> Snapshot:
        """Everything stored, and the last resource version handed out."""
        ...

    def commit(self, puts: Sequence[Record], deletes: Sequence[RecordKey], resource_version: int) -> None:
        """Store ``puts``, remove ``deletes`` and record ``resource_version``, atomically.

        Raises (typically ``OSError``) if it could not; the previous state then stays in force.
        """
        ...

    def close(self) -> None:
        ...


def apply_change(records: dict[RecordKey, Record], puts: Sequence[Record], deletes: Sequence[RecordKey]) -> None:
    """Apply one change set to ``records`` in place: deletes, then puts."""
    for key in deletes:
        records.pop(key, None)
    for r in puts:
        records[r.key] = r


class MemoryBackend:
    """Keeps records in a dict. ``fail_next_commit`` lets tests simulate a storage failure."""

    def __init__(self, snapshot: Snapshot | None = None):
        self._records: dict[RecordKey, Record] = {}
        self._rv = 0
        self.fail_next_commit: Exception | None = None
        self.commits = 0
        if snapshot is not None:
            self._records = {r.key: r for r in snapshot.records}
            self._rv = snapshot.resource_version

    def load(self) -> Snapshot:
        return Snapshot(resource_version=self._rv, records=list(self._records.values()))

    def commit(self, puts: Sequence[Record], deletes: Sequence[RecordKey], resource_version: int) -> None:
        if self.fail_next_commit is not None:
            exc, self.fail_next_commit = self.fail_next_commit, None
            raise exc
        records = dict(self._records)
        apply_change(records, puts, deletes)
        self._records = records
        self._rv = resource_version
        self.commits += 1

    def close(self) -> None:
        pass
