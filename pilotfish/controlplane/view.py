"""ConfigView: one immutable, consistent view of the desired configuration.

The control plane builds a view from the config store once per change set
(``ConfigView.build(store.list())``); the registry and ``translate()`` read only the view, never
the store. A view holds:

- the typed objects, grouped by kind, each as an :class:`Entry` that remembers where it came
  from (``"VirtualService default/reviews reviews.yaml:12"``), so generated proxy
  configuration can cite its source (``Route.origin``, ``Cluster.metadata["origin"]``);
- the mesh settings translate needs: the root namespace (``istio-system`` unless told
  otherwise: mesh-wide DestinationRules and the mesh-default Sidecar live there) and the
  cluster's DNS suffix (``cluster.local``);
- ``exportTo`` visibility (:meth:`ConfigView.visible`);
- a memo (:meth:`ConfigView.memo`) where derived indices and translation caches live. They are
  keyed on the view's own immutable content, so ``translate`` stays a pure function: the same
  view, registry and node always give the same output.

Entries of one kind are kept in Istio's conflict-resolution order: creation time, then name,
then namespace (Istio's ``sortConfigByCreationTime``). "The oldest wins" rules (two
VirtualServices for one host on sidecars, two Sidecars for one workload) use that order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pilotfish.api.types.meta import TypedObject
from pilotfish.memo import Memoized

__all__ = ["ConfigView", "Entry", "DEFAULT_ROOT_NAMESPACE", "DEFAULT_DOMAIN_SUFFIX", "EXPORT_TO_ANNOTATION"]

DEFAULT_ROOT_NAMESPACE = "istio-system"
DEFAULT_DOMAIN_SUFFIX = "cluster.local"
#: Where a Kubernetes Service says which namespaces see it (Istio's annotation).
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"

_CLUSTER_SCOPED = frozenset({"Namespace"})
_GATEWAY_API_GROUP = "gateway.networking.k8s.io"
_EVERYONE = frozenset({"*"})



@dataclass(frozen=True, slots=True, eq=False)
class Entry:
    """One object of the view: the typed object and where it came from."""

    obj: Any
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str
    file: str | None = None
    line: int | None = None
    created: str = ""

    @property
    def key(self) -> str:
        """``namespace/name`` (just ``name`` for cluster-scoped kinds)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def origin(self) -> str:
        """``"VirtualService default/reviews reviews.yaml:12"`` (without ``file:line`` when
        the object has no known file)."""
        where = ""
        if self.file:
            where = f" {self.file}:{self.line}" if self.line else f" {self.file}"
        return f"{self.kind} {self.key}{where}"

    def __repr__(self) -> str:
        return f"<Entry {self.origin}>"


def _order(e: Entry) -> tuple[str, str, str]:
    return (e.created, e.name, e.namespace)


def _kind_key(obj: Any) -> str:
    kind = getattr(obj, "kind", "") or type(obj).__name__
    api_version = getattr(obj, "api_version", "") or ""
    if api_version.split("/", 1)[0] == _GATEWAY_API_GROUP:
        return f"{kind}.{_GATEWAY_API_GROUP}"  # keep Gateway API kinds apart from Istio's
    return kind


def _entry_of(item: Any, default_namespace: str) -> Entry | None:
    """A StoredObject, a TypedObject, a (TypedObject, file, line) tuple or a loader Resource."""
    file = line = None
    created = ""
    if isinstance(item, tuple):
        obj, file, line = (list(item) + [None, None])[:3]
    elif isinstance(item, TypedObject):
        obj = item
    elif hasattr(item, "obj") and hasattr(item, "key"):  # config.store.StoredObject
        obj = item.obj
        file, line = item.file, item.line
        created = getattr(item, "created", "") or ""
    elif hasattr(item, "data") and hasattr(item, "file"):  # api.loader.Resource
        from pilotfish.api.parsing import try_parse

        obj, issues = try_parse(item, default_namespace)
        if obj is None:
            errs = [str(i) for i in issues if i.level == "Error"]
            if errs:
                raise ValueError("; ".join(errs))
            return None  # unknown or ignored kind: skipped, as the store does
        file, line = item.file, item.line
    else:
        raise TypeError(f"cannot put {type(item).__name__} in a ConfigView")
    if obj is None:
        return None
    kind = _kind_key(obj)
    md = obj.metadata
    if kind in _CLUSTER_SCOPED:
        ns = ""
    else:
        ns = md.namespace or (item.key.namespace if hasattr(item, "key") and item.key.namespace else "") or default_namespace
    return Entry(obj, kind, ns, md.name, file, line, created or md.creation_timestamp or "")


class ConfigView(Memoized):
    """An immutable view of the configuration; see the module docstring."""

    def __init__(
        self,
        entries: Iterable[Entry],
        *,
        root_namespace: str = DEFAULT_ROOT_NAMESPACE,
        domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
    ) -> None:
        self.root_namespace = root_namespace
        self.domain_suffix = domain_suffix
        latest: dict[tuple[str, str, str], Entry] = {}
        for e in entries:  # the same object twice: the later one wins, as with kubectl apply
            latest.pop((e.kind, e.namespace, e.name), None)
            latest[(e.kind, e.namespace, e.name)] = e
        by_kind: dict[str, list[Entry]] = {}
        for e in latest.values():
            by_kind.setdefault(e.kind, []).append(e)
        self._by_kind: dict[str, tuple[Entry, ...]] = {k: tuple(sorted(v, key=_order)) for k, v in by_kind.items()}
        self._by_key = latest
        super().__init__()  # Memoized: memo(), drop_caches()

    @classmethod
    def build(
        cls,
        objects: Iterable[Any],
        *,
        root_namespace: str = DEFAULT_ROOT_NAMESPACE,
        domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
        default_namespace: str = "default",
    ) -> ConfigView:
        """A view of ``objects``: :class:`~pilotfish.config.store.StoredObject` (as
        ``Store.list()`` returns them), typed objects, ``(typed object, file, line)`` tuples, or
        loader :class:`~pilotfish.api.loader.Resource` documents (parsed here; a schema error
        raises ``ValueError``, unknown kinds are skipped). Objects without a namespace land in
        ``default_namespace``; objects without a typed form are skipped; when the same object
        (kind, namespace, name) comes twice, the later one wins, as with ``kubectl apply``."""
        entries = []
        for item in objects:
            e = _entry_of(item, default_namespace)
            if e is not None:
                entries.append(e)
        return cls(entries, root_namespace=root_namespace, domain_suffix=domain_suffix)

    # ------------------------------------------------------------------ reading

    @property
    def kinds(self) -> list[str]:
        return sorted(self._by_kind)

    def entries(self, kind: str) -> tuple[Entry, ...]:
        """Entries of a kind in Istio's order (oldest first, then name, then namespace)."""
        return self._by_kind.get(kind, ())

    def objects(self, kind: str) -> list[Any]:
        return [e.obj for e in self._by_kind.get(kind, ())]

    def get(self, kind: str, namespace: str, name: str) -> Entry | None:
        return self._by_key.get((kind, namespace, name))

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_kind.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in sorted(self._by_kind.items()))
        return f"<ConfigView root={self.root_namespace} {counts}>"

    # ------------------------------------------------------------------ visibility

    def export_to(self, entry: Entry) -> frozenset[str]:
        """The namespaces an object is visible from: ``{"*"}`` (everyone, the default), a set of
        namespace names (``.`` is resolved to the object's own), or empty (``~``: nobody).

        VirtualService, DestinationRule and ServiceEntry read ``spec.exportTo``; a Kubernetes
        Service reads the ``networking.istio.io/exportTo`` annotation (comma-separated)."""
        obj = entry.obj
        if entry.kind == "Service":
            raw = obj.metadata.annotations.get(EXPORT_TO_ANNOTATION, "")
            values = [v.strip() for v in raw.split(",") if v.strip()]
        else:
            spec = getattr(obj, "spec", None)
            values = list(getattr(spec, "export_to", None) or [])
        return resolve_export_to(values, entry.namespace)

    def visible(self, entry: Entry, namespace: str) -> bool:
        """Is ``entry`` visible to workloads (and config) of ``namespace``?"""
        ex = self.export_to(entry)
        return "*" in ex or namespace in ex


def resolve_export_to(values: Iterable[str], own_namespace: str) -> frozenset[str]:
    """Istio's ``exportTo`` list to the set of namespaces that see the object."""
    vals = list(values)
    if not vals:
        return _EVERYONE
    out: set[str] = set()
    for v in vals:
        if v == "*":
            return _EVERYONE
        if v == ".":
            out.add(own_namespace)
        elif v == "~":
            continue
        else:
            out.add(v)
    return frozenset(out)
