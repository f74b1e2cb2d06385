"""The config store: the desired configuration, with ``kubectl apply`` semantics and watches.

- :meth:`Store.apply` validates every document first; if any has an error, nothing changes and
  :class:`ApplyError` carries the issues. Otherwise each document is ``created``,
  ``configured`` or ``unchanged`` (documents of unknown or ignored kinds are ``skipped``, with
  their warning), and the whole change set is committed to the backend at once.
- Objects carry Kubernetes' bookkeeping: ``metadata.resourceVersion`` (one global counter,
  bumped by every write), ``metadata.generation`` (bumped when anything but metadata and status
  changes), ``metadata.creationTimestamp`` and ``metadata.uid``. Namespaced kinds default to
  the ``default`` namespace; cluster-scoped kinds (Namespace) have none.
- Subscribers get ``ADDED``/``MODIFIED``/``DELETED`` events after each commit, in order, by
  callback (:meth:`Store.subscribe`) or as an async iterator (:meth:`Store.watch`).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as _dt
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pilotfish.api import schema
from pilotfish.api.issues import ERROR, Issue
from pilotfish.api.kinds import KindInfo, lookup, resolve
from pilotfish.api.loader import Resource
from pilotfish.api.types.meta import TypedObject
from pilotfish.api.validation import check
from pilotfish.config.backend import Backend, MemoryBackend, Record, RecordKey

Action = Literal["created", "configured", "unchanged", "skipped"]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]

# metadata the server owns: never compared, never taken from the user's document
_SERVER_METADATA = ("resourceVersion", "generation", "creationTimestamp", "uid", "managedFields", "selfLink")


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """Identity of a stored object. ``namespace`` is None for cluster-scoped kinds."""

    group: str
    kind: str
    namespace: str | None
    name: str

    @property
    def resource(self) -> str:
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()

    def __str__(self) -> str:
        return f"{self.resource} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as stored: the document (with server metadata filled in) and its typed form.

    ``data`` is shared with the store: treat it as read-only.
    """

    key: ObjectKey
    data: dict[str, Any]
    obj: TypedObject | None
    resource_version: int
    generation: int
    created: str
    uid: str
    file: str | None = None
    line: int | None = None

    @property
    def kind(self) -> str:
        return self.key.kind

    @property
    def group(self) -> str:
        return self.key.group

    @property
    def namespace(self) -> str | None:
        return self.key.namespace

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion", ""))

    def to_resource(self) -> Resource:
        return Resource(self.data, self.file, self.line)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    action: Action
    key: ObjectKey | None
    object: StoredObject | None
    warnings: list[Issue] = field(default_factory=list)
    origin: str = ""

    def __str__(self) -> str:
        if self.key is None:
            return f"{self.origin or 'document'} {self.action}"
        name = f"{self.key.resource}/{self.key.name}"
        where = f" -n {self.key.namespace}" if self.key.namespace else ""
        return f"{name}{where} {self.action}"


@dataclass(frozen=True, slots=True)
class Event:
    """A change: ``object`` is the new state (the last state for ``DELETED``)."""

    type: EventType
    object: StoredObject
    old: StoredObject | None
    resource_version: int


class ApplyError(Exception):
    """An apply refused as a whole; ``issues`` holds every error (and the warnings)."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        errs = [i for i in issues if i.level == ERROR]
        lines = [str(i) for i in errs[:20]]
        if len(errs) > 20:
            lines.append(f"... and {len(errs) - 20} more errors")
        super().__init__(f"apply refused, nothing changed ({len(errs)} error{'s' if len(errs) != 1 else ''}):\n" + "\n".join(lines))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == ERROR]


class NotFound(KeyError):
    """No such object."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class Subscription:
    """Returned by :meth:`Store.subscribe`; ``close()`` stops the callbacks."""

    def __init__(self, store: Store, callback: Callable[[Event], None], flt: Callable[[StoredObject], bool]):
        self._store = store
        self.callback = callback
        self.filter = flt

    def close(self) -> None:
        self._store._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """The desired configuration. Thread-safe; callbacks run on the writer's thread."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        default_namespace: str = "default",
        clock: Callable[[], str] = _now,
    ):
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        self.default_namespace = default_namespace
        self._clock = clock
        self._lock = threading.RLock()
        self._objects: dict[ObjectKey, StoredObject] = {}
        self._subs: list[Subscription] = []
        #: Issues met while loading stored objects (e.g. after an upgrade made rules stricter).
        self.load_issues: list[Issue] = []
        snap = self.backend.load()
        self._rv = snap.resource_version
        for rec in snap.records:
            so = self._from_record(rec)
            self._objects[so.key] = so

    # --- reading -------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The last resource version handed out (0 for a new store)."""
        return self._rv

    def get(self, kind: str | KindInfo, namespace: str | None, name: str) -> StoredObject | None:
        key = self._key(kind, namespace, name)
        with self._lock:
            return self._objects.get(key)

    def list(self, kind: str | KindInfo | None = None, namespace: str | None = None) -> list[StoredObject]:
        """Objects of a kind (all kinds if None), in a namespace (all if None), sorted."""
        info = self._kind(kind) if kind is not None else None
        with self._lock:
            out = [
                so
                for k, so in self._objects.items()
                if (info is None or (k.group, k.kind) == info.key) and (namespace is None or k.namespace == namespace)
            ]
        out.sort(key=lambda so: (so.key.group, so.key.kind, so.key.namespace or "", so.key.name))
        return out

    def __len__(self) -> int:
        return len(self._objects)

    # --- writing -------------------------------------------------------------------------------

    def apply(self, resources: Iterable[Resource | dict[str, Any]], *, dry_run: bool = False) -> list[ApplyResult]:
        """Apply documents as ``kubectl apply -f`` would, all or nothing.

        Documents are :class:`Resource` objects (from the loader, with file and line) or plain
        mappings. Raises :class:`ApplyError` (nothing changed) if any document has an error, and
        lets a backend's ``OSError`` through (nothing changed either). Watch events are sent
        after the whole change set is committed.
        """
        docs = [r if isinstance(r, Resource) else Resource(r) for r in resources]
        checked = [(res, check(res, self.default_namespace)) for res in docs]
        issues = [i for _, c in checked for i in c.issues]
        if any(i.level == ERROR for i in issues):
            raise ApplyError(issues)
        with self._lock:
            results: list[ApplyResult] = []
            pending: dict[ObjectKey, StoredObject] = {}
            events: list[tuple[EventType, StoredObject, StoredObject | None]] = []
            rv = self._rv
            for res, c in checked:
                if c.obj is None or c.info is None:
                    results.append(ApplyResult("skipped", None, None, c.issues, res.origin))
                    continue
                info = c.info
                ns = (res.namespace or self.default_namespace) if info.namespaced else None
                key = ObjectKey(info.group, info.kind, ns, res.name)
                old = pending.get(key) or self._objects.get(key)
                content = _user_content(res.data, ns)
                if old is not None and _user_content(old.data, ns) == content:
                    results.append(ApplyResult("unchanged", key, old, c.issues, res.origin))
                    continue
                rv += 1
                if old is None:
                    generation, created, uid = 1, self._clock(), str(uuid.uuid4())
                else:
                    same_spec = _spec_part(_user_content(old.data, ns)) == _spec_part(content)
                    generation = old.generation if same_spec else old.generation + 1
                    created, uid = old.created, old.uid
                data = _with_server_metadata(content, rv, generation, created, uid)
                obj = schema.convert(info.model, data)  # the typed form sees namespace, generation...
                new = StoredObject(key, data, obj, rv, generation, created, uid, res.file, res.line)
                pending[key] = new
                events.append(("ADDED" if old is None else "MODIFIED", new, old))
                results.append(ApplyResult("created" if old is None else "configured", key, new, c.issues, res.origin))
            if dry_run or not pending:
                return results
            self.backend.commit([_to_record(so) for so in pending.values()], [], rv)
            self._objects.update(pending)
            self._rv = rv
            self._emit(events)
            return results

    def delete(self, kind: str | KindInfo, namespace: str | None, name: str) -> StoredObject:
        """Delete one object; raises :class:`NotFound` if there is none."""
        key = self._key(kind, namespace, name)
        with self._lock:
            old = self._objects.get(key)
            if old is None:
                raise NotFound(f"{key} not found")
            rv = self._rv + 1
            self.backend.commit([], [_record_key(key)], rv)
            del self._objects[key]
            self._rv = rv
            self._emit([("DELETED", old, old)], rv_for_deletes=rv)
            return old

    def delete_resources(self, resources: Iterable[Resource], *, ignore_missing: bool = True) -> list[StoredObject]:
        """``kubectl delete -f``: delete the objects the documents name, in one commit."""
        with self._lock:
            keys: list[ObjectKey] = []
            for res in resources:
                info = lookup(res.group, res.kind)
                if info is None or info.model is None:
                    continue
                key = self._key(info, res.namespace, res.name)
                if key in self._objects:
                    if key not in keys:
                        keys.append(key)
                elif not ignore_missing:
                    raise NotFound(f"{key} not found")
            if not keys:
                return []
            rv = self._rv + 1
            self.backend.commit([], [_record_key(k) for k in keys], rv)
            gone = [self._objects.pop(k) for k in keys]
            self._rv = rv
            self._emit([("DELETED", so, so) for so in gone], rv_for_deletes=rv)
            return gone

    def close(self) -> None:
        self.backend.close()

    # --- watching ------------------------------------------------------------------------------

    def subscribe(
        self,
        callback: Callable[[Event], None],
        *,
        replay: bool = False,
        kind: str | KindInfo | None = None,
        namespace: str | None = None,
    ) -> Subscription:
        """Call ``callback(event)`` after each change (on the writer's thread).

        With ``replay``, the current objects are first sent as ``ADDED`` events (list + watch).
        Callbacks may read the store; they should be quick.
        """
        info = self._kind(kind) if kind is not None else None

        def flt(so: StoredObject) -> bool:
            return (info is None or (so.key.group, so.key.kind) == info.key) and (
                namespace is None or so.key.namespace == namespace
            )

        sub = Subscription(self, callback, flt)
        with self._lock:
            if replay:
                for so in self.list():
                    if flt(so):
                        callback(Event("ADDED", so, None, so.resource_version))
            self._subs.append(sub)
        return sub

    async def watch(
        self,
        *,
        replay: bool = True,
        kind: str | KindInfo | None = None,
        namespace: str | None = None,
        max_queue: int = 0,
    ) -> AsyncIterator[Event]:
        """Events as an async iterator, safe however the store is written to (any thread).

        ``async for event in store.watch(): ...``; leaving the loop unsubscribes.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue(max_queue)

        def push(ev: Event) -> None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                queue.put_nowait(ev)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, ev)

        sub = self.subscribe(push, replay=replay, kind=kind, namespace=namespace)
        try:
            while True:
                yield await queue.get()
        finally:
            sub.close()

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _emit(self, events: list[tuple[EventType, StoredObject, StoredObject | None]], rv_for_deletes: int | None = None) -> None:
        for typ, so, old in events:
            rv = rv_for_deletes if typ == "DELETED" and rv_for_deletes is not None else so.resource_version
            ev = Event(typ, so, old if typ != "ADDED" else None, rv)
            for sub in list(self._subs):
                if sub.filter(so):
                    sub.callback(ev)

    # --- helpers -------------------------------------------------------------------------------

    def _kind(self, kind: str | KindInfo) -> KindInfo:
        return kind if isinstance(kind, KindInfo) else resolve(kind)

    def _key(self, kind: str | KindInfo, namespace: str | None, name: str) -> ObjectKey:
        info = self._kind(kind)
        ns = (namespace or self.default_namespace) if info.namespaced else None
        return ObjectKey(info.group, info.kind, ns, name)

    def _from_record(self, rec: Record) -> StoredObject:
        key = ObjectKey(rec.group, rec.kind, rec.namespace, rec.name)
        res = Resource(rec.data, rec.file, rec.line)
        c = check(res, self.default_namespace)
        if c.obj is None:
            self.load_issues.extend(c.issues)
        return StoredObject(key, rec.data, c.obj, rec.resource_version, rec.generation, rec.created, rec.uid, rec.file, rec.line)


def _user_content(data: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    """The document as the user owns it: normalized, server metadata removed, namespace set."""
    doc = schema.normalize(data)
    md = dict(doc.get("metadata") or {})
    for k in _SERVER_METADATA:
        md.pop(k, None)
    if namespace is None:
        md.pop("namespace", None)
    else:
        md["namespace"] = namespace
    doc["metadata"] = md
    return doc


def _spec_part(doc: dict[str, Any]) -> dict[str, Any]:
    """What ``generation`` tracks: everything but metadata and status."""
    return {k: v for k, v in doc.items() if k not in ("metadata", "status")}


def _with_server_metadata(content: dict[str, Any], rv: int, generation: int, created: str, uid: str) -> dict[str, Any]:
    data = copy.copy(content)
    md = dict(data["metadata"])
    md["resourceVersion"] = str(rv)
    md["generation"] = generation
    md["creationTimestamp"] = created
    md["uid"] = uid
    data["metadata"] = md
    return data


def _record_key(key: ObjectKey) -> RecordKey:
    return (key.group, key.kind, key.namespace, key.name)


def _to_record(so: StoredObject) -> Record:
    k = so.key
    return Record(
        group=k.group,
        kind=k.kind,
        namespace=k.namespace,
        name=k.name,
        data=so.data,
        resource_version=so.resource_version,
        generation=so.generation,
        created=so.created,
        uid=so.uid,
        file=so.file,
        line=so.line,
    )
