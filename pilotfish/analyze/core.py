"""The analysis model: resources as analyzers see them, the context they query, and messages.

An analyzer is a function of a :class:`Context`. The context holds a consistent view of the
configuration (Istio resources plus the Kubernetes-style "live state": Namespaces, Services,
Pods, Secrets...), indexed by kind and name, and collects the :class:`Message` objects the
analyzers report. It does no I/O, so the same analyzers run over files today and over the
control plane's config store later (see :func:`pilotfish.analyze.analyze`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pilotfish.api.loader import Resource

from .messages import Level, MessageType

# Kinds that have no namespace: their messages show ``Kind name``, and a default namespace is
# never applied to them.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
        "StorageClass",
        "GatewayClass",
        "IngressClass",
        "MeshConfig",
    }
)

GATEWAY_API_GROUP = "gateway.networking.k8s.io"


def kind_key(res: Resource) -> str:
    """The key a resource is indexed under. Kinds are unique across the groups we read except
    ``Gateway``, which exists both in Istio and in the Kubernetes Gateway API."""
    kind = res.kind
    if kind == "Gateway" and res.group.startswith(GATEWAY_API_GROUP):
        return "KubernetesGateway"
    return kind


class Obj:
    """One resource as the analyzers see it: the raw :class:`Resource` plus its effective
    namespace (the default namespace applied) and whether Pilotfish synthesized it."""

    __slots__ = ("res", "kind", "key", "ns", "name", "synthetic", "owner")

    def __init__(
        self,
        res: Resource,
        ns: str,
        *,
        key: str | None = None,
        synthetic: bool = False,
        owner: Obj | None = None,
    ):
        self.res = res
        self.kind = res.kind
        self.key = key or kind_key(res)
        self.ns = ns
        self.name = res.name
        self.synthetic = synthetic
        # For a synthesized workload (a pod standing for a Deployment), the resource it came from.
        self.owner = owner

    @property
    def data(self) -> dict[str, Any]:
        return self.res.data

    @property
    def spec(self) -> dict[str, Any]:
        return self.res.spec

    @property
    def labels(self) -> dict[str, str]:
        return self.res.labels

    @property
    def annotations(self) -> dict[str, str]:
        return self.res.annotations

    @property
    def status(self) -> dict[str, Any]:
        st = self.res.data.get("status")
        return st if isinstance(st, dict) else {}

    @property
    def full_name(self) -> str:
        """``ns/name``, or ``name`` when there is no namespace (Istio's ``FullName``)."""
        return f"{self.ns}/{self.name}" if self.ns else self.name

    @property
    def friendly_name(self) -> str:
        """``Kind ns/name`` as istioctl prints it."""
        return f"{self.kind} {self.full_name}"

    @property
    def origin_namespace(self) -> str:
        """The namespace used to filter messages by ``-n``: a Namespace's own name, else its
        namespace ("" for cluster-scoped resources)."""
        return self.name if self.kind == "Namespace" else self.ns

    def __repr__(self) -> str:
        return f"<Obj {self.friendly_name}{' (synthetic)' if self.synthetic else ''}>"


Path = tuple[str | int, ...]


@dataclass(slots=True)
class Message:
    """One finding: a message type, its parameters and the resource (and field) it is about."""

    type: MessageType
    params: tuple[Any, ...]
    obj: Obj | None
    path: Path | None = None
    analyzer: str = ""
    line: int | None = None  # the field's line once resolved, else the resource's line

    @property
    def code(self) -> str:
        return self.type.code

    @property
    def level(self) -> Level:
        return self.type.level

    @property
    def text(self) -> str:
        return self.type.format(self.params)

    @property
    def kind(self) -> str | None:
        return self.obj.kind if self.obj else None

    @property
    def namespace(self) -> str | None:
        return (self.obj.ns or None) if self.obj else None

    @property
    def name(self) -> str | None:
        return self.obj.name if self.obj else None

    @property
    def resource(self) -> str:
        """``Kind ns/name`` (or ``Kind name``), istioctl's "origin"."""
        return self.obj.friendly_name if self.obj else ""

    @property
    def file(self) -> str | None:
        return self.obj.res.file if self.obj else None

    @property
    def reference(self) -> str:
        """``file:line`` when the resource came from a file."""
        if not self.obj or not self.obj.res.file:
            return ""
        line = self.line or self.obj.res.line
        return f"{self.obj.res.file}:{line}" if line else self.obj.res.file

    def origin(self) -> str:
        if not self.obj:
            return ""
        ref = self.reference
        return f" ({self.resource}{' ' + ref if ref else ''})"

    def __str__(self) -> str:
        return f"{self.level} [{self.code}]{self.origin()} {self.text}"

    def dedupe_key(self) -> tuple:
        return (self.code, self.resource, self.file, self.path, self.text)

    def sort_key(self) -> tuple:
        obj = self.obj
        comparator = f"{obj.kind}/{obj.name}/{obj.ns}" if obj else ""
        return (self.level.sort_order, self.code, obj is not None, comparator, str(self))

    def to_dict(self, doc_ref: str | None = "istioctl-analyze") -> dict[str, Any]:
        """The JSON/YAML shape istioctl prints (keys in its order: sorted)."""
        query = f"?ref={doc_ref}" if doc_ref else ""
        out: dict[str, Any] = {
            "code": self.code,
            "documentationUrl": f"{DOCS_URL}/{self.code.lower()}/{query}",
            "level": str(self.level),
            "message": self.text,
        }
        if self.obj:
            out["origin"] = self.resource
            if self.reference:
                out["reference"] = self.reference
        return dict(sorted(out.items()))


DOCS_URL = "https://istio.io/latest/docs/reference/config/analysis"

AnalyzerFn = Callable[["Context"], None]


@dataclass(frozen=True, slots=True)
class Analyzer:
    """An analyzer: Istio's name for it (what ``--analyzer`` takes), what it checks, the
    message codes it can emit, and the function doing the work."""

    name: str
    description: str
    codes: tuple[str, ...]
    fn: AnalyzerFn
    # Part of the default set (Istio's ``All()``); others run only when named.
    default: bool = True
    # A Pilotfish addition, not one of Istio's analyzers.
    pilotfish: bool = False


REGISTRY: dict[str, Analyzer] = {}


def analyzer(
    name: str,
    description: str,
    codes: Iterable[str],
    *,
    default: bool = True,
    pilotfish: bool = False,
) -> Callable[[AnalyzerFn], AnalyzerFn]:
    """Register the decorated function as the analyzer called ``name``."""

    def register(fn: AnalyzerFn) -> AnalyzerFn:
        if name in REGISTRY:
            raise ValueError(f"analyzer {name} registered twice")
        REGISTRY[name] = Analyzer(name, description, tuple(codes), fn, default, pilotfish)
        return fn

    return register


@dataclass
class Context:
    """What analyzers read (resources by kind and name, mesh config) and where they report."""

    objs: list[Obj]
    mesh: dict[str, Any]
    istio_namespace: str = "istio-system"
    now: float | None = None
    # Whether the pods are known: checks of the form "this selects no workload" only make sense
    # when they are (a file set without any Pod or Deployment says nothing about workloads).
    workloads_known: bool = True
    # Likewise for services: "host not found" only makes sense when services are known.
    services_known: bool = True
    # The namespace given to resources that name none.
    default_namespace: str = "default"
    messages: list[Message] = field(default_factory=list)
    current: str = ""
    # Analyzers that ran but could not do their work, with the reason (e.g. validation missing).
    unavailable: dict[str, str] = field(default_factory=dict)
    _by_key: dict[str, list[Obj]] = field(default_factory=dict, repr=False)
    _index: dict[tuple[str, str, str], Obj] = field(default_factory=dict, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for o in self.objs:
            self._by_key.setdefault(o.key, []).append(o)
            self._index[(o.key, o.ns, o.name)] = o

    def all(self, key: str) -> list[Obj]:
        """Every resource of a kind (``KubernetesGateway`` for the Gateway API's Gateway)."""
        return self._by_key.get(key, [])

    def find(self, key: str, ns: str, name: str) -> Obj | None:
        return self._index.get((key, ns, name))

    def need_workloads(self, what: str) -> bool:
        """True when workloads are known; else notes that ``what`` was skipped and returns False."""
        if not self.workloads_known:
            self.unavailable.setdefault(
                self.current,
                f"{what} skipped: the input declares no workloads (Pods, Deployments...)",
            )
        return self.workloads_known

    def need_services(self, what: str) -> bool:
        """True when services are known; else notes that ``what`` was skipped and returns False."""
        if not self.services_known:
            self.unavailable.setdefault(
                self.current,
                f"{what} skipped: the input declares no services (Services, ServiceEntries)",
            )
        return self.services_known

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """Share an index (e.g. the service host map) between analyzers of one run."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def report(
        self, mtype: MessageType, obj: Obj | None, *params: Any, path: Path | None = None
    ) -> Message:
        # A message about a synthesized workload is reported on the resource it stands for.
        if obj is not None and obj.synthetic and obj.owner is not None:
            obj = obj.owner
        msg = Message(mtype, params, obj, path, self.current)
        self.messages.append(msg)
        return msg
