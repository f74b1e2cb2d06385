"""Running analyzers over a set of resources: the entry point the CLI and the control plane use.

``analyze(resources)`` takes :class:`~pilotfish.api.loader.Resource` objects from anywhere (files
today, the config store's ``list()`` later), builds the analysis view, runs the chosen analyzers
and returns the messages sorted and de-duplicated the way ``istioctl analyze`` prints them.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pilotfish.api.loader import Resource

from . import lines
from .core import CLUSTER_SCOPED, REGISTRY, Analyzer, Context, Message, Obj, kind_key
from .meshconfig import mesh_config
from .messages import Level
from .util import as_dict, selector_matches, str_map, template_of

# Analyzer modules, imported on first use; each registers its analyzers.
ANALYZER_MODULES = (
    "annotations",
    "app_uid",
    "authz",
    "authz_principals",
    "conditions",
    "deprecation",
    "dr_ca_certificates",
    "dr_subsets",
    "gateway_certificates",
    "gateway_conflicts",
    "gateway_ports",
    "gateway_secrets",
    "injection",
    "mtls",
    "multi_service",
    "port_names",
    "schema",
    "se_addresses",
    "se_protocols",
    "sidecar_selectors",
    "telemetry",
    "vs_conflicting_hosts",
    "vs_destination_hosts",
    "vs_destination_rules",
    "vs_gateways",
    "vs_jwt_claims",
    "vs_regexes",
)

SUPPRESS_ANNOTATION = "galley.istio.io/analyze-suppress"
WORKLOAD_CONTROLLERS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")


def all_analyzers() -> dict[str, Analyzer]:
    """Every analyzer Pilotfish has, by Istio's name."""
    for mod in ANALYZER_MODULES:
        importlib.import_module(f"{__package__}.{mod}")
    return dict(sorted(REGISTRY.items()))


def default_analyzers() -> list[Analyzer]:
    """The analyzers that run when none are named (Istio's ``All()`` minus the ones that do
    not apply, plus Pilotfish's own)."""
    return [a for a in all_analyzers().values() if a.default]


@dataclass
class AnalysisResult:
    messages: list[Message]
    executed: list[str]
    # Analyzers asked for that did not run or could not do their work, with the reason.
    skipped: dict[str, str] = field(default_factory=dict)

    def at_least(self, level: Level) -> list[Message]:
        return [m for m in self.messages if m.level.at_least(level)]


# -- building the view ---------------------------------------------------------------------


def _default_ingress(mesh: dict[str, Any], istio_ns: str) -> list[Resource]:
    """What ``istioctl analyze`` assumes exists when reading files only: the default ingress
    gateway workload and its Service, so a Gateway selecting ``istio: ingressgateway`` is not
    reported as selecting nothing. (Pilotfish runs an ingress gateway with the same labels.)"""
    if str(mesh.get("ingressControllerMode", "")).upper() == "OFF":
        return []
    svc_name = str(mesh.get("ingressService") or "istio-ingressgateway")
    labels = {"istio": "ingressgateway"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{svc_name}-dummypod", "namespace": istio_ns, "labels": labels},
        "spec": {"containers": [{"name": "istio-proxy"}]},
    }
    # The ports of Istio's ingress gateway Service (the chart maps 80 and 443 to the
    # unprivileged 8080 and 8443 the gateway listens on).
    ports = [
        ("http2", 80, 8080),
        ("https", 443, 8443),
        ("tcp", 31400, 31400),
        ("tls", 15443, 15443),
    ]
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc_name, "namespace": istio_ns},
        "spec": {
            "selector": dict(labels),
            "ports": [
                {"name": n, "port": p, "protocol": "TCP", "targetPort": t} for n, p, t in ports
            ],
        },
    }
    return [Resource(pod), Resource(svc)]


def _as_resource(item: Any) -> Resource:
    to_resource = getattr(item, "to_resource", None)
    return to_resource() if callable(to_resource) else item


def _effective_ns(res: Resource, default_ns: str) -> str:
    if res.kind in CLUSTER_SCOPED:
        return ""
    return res.namespace or default_ns


def _synthetic_pods(objs: list[Obj]) -> list[Obj]:
    """A stand-in Pod for each workload controller whose pods are not in the input: the pods
    Pilotfish's runtime (or Kubernetes) will create from its template. Selector checks then see
    the workloads a user declared with Deployments, as they would on a running mesh."""
    real_pods: dict[str, list[Obj]] = {}
    names: set[tuple[str, str]] = set()
    for o in objs:
        if o.key == "Pod":
            real_pods.setdefault(o.ns, []).append(o)
            names.add((o.ns, o.name))
    out: list[Obj] = []
    for o in objs:
        if o.kind not in WORKLOAD_CONTROLLERS:
            continue
        tpl = template_of(o)
        meta = as_dict(tpl.get("metadata"))
        labels = str_map(meta.get("labels"))
        sel = str_map(as_dict(o.spec.get("selector")).get("matchLabels")) or labels
        if any(selector_matches(sel, p.labels) for p in real_pods.get(o.ns, [])):
            continue
        if (o.ns, o.name) in names:
            continue
        data = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": o.name,
                "namespace": o.ns,
                "labels": labels,
                "annotations": str_map(meta.get("annotations")),
            },
            "spec": as_dict(tpl.get("spec")),
        }
        res = Resource(data, o.res.file, o.res.line)
        out.append(Obj(res, o.ns, key="Pod", synthetic=True, owner=o))
        names.add((o.ns, o.name))
    return out


def build_context(
    resources: Iterable[Resource],
    *,
    default_namespace: str = "default",
    istio_namespace: str = "istio-system",
    mesh: dict[str, Any] | None = None,
    default_resources: bool = True,
    workloads_from_controllers: bool = True,
    workloads_known: bool | None = None,
    services_known: bool | None = None,
    now: float | None = None,
) -> Context:
    mesh = mesh if mesh is not None else mesh_config()
    # Stored objects (pilotfish.config.store) convert themselves; Resources pass as they are.
    user = [r for r in (_as_resource(x) for x in resources) if r.kind]
    if workloads_known is None:
        workloads_known = any(r.kind == "Pod" or r.kind in WORKLOAD_CONTROLLERS for r in user)
    if services_known is None:
        services_known = any(r.kind in ("Service", "ServiceEntry") for r in user)
    ordered: list[Resource] = []
    if default_resources:
        ordered += _default_ingress(mesh, istio_namespace)
    ordered += user
    # Like a config store, one resource per kind/namespace/name: the last one read wins.
    seen: dict[tuple[str, str, str], Obj] = {}
    for res in ordered:
        ns = _effective_ns(res, default_namespace)
        obj = Obj(res, ns)
        seen.pop((obj.key, ns, obj.name), None)
        seen[(obj.key, ns, obj.name)] = obj
    objs = list(seen.values())
    if workloads_from_controllers:
        objs += _synthetic_pods(objs)
    return Context(
        objs,
        mesh,
        istio_namespace,
        now,
        workloads_known=workloads_known,
        services_known=services_known,
        default_namespace=default_namespace,
    )


# -- filtering, ordering --------------------------------------------------------------------


def _glob(pattern: str, text: str) -> bool:
    # istioctl's suppressions only know "*"; keep other glob characters literal.
    escaped = "".join("[" + c + "]" if c in "?[]" else c for c in pattern)
    return fnmatch.fnmatchcase(text, escaped)


def _suppressed(msg: Message, suppress: Sequence[tuple[str, str]]) -> bool:
    if msg.obj is not None:
        anno = msg.obj.annotations.get(SUPPRESS_ANNOTATION)
        if anno:
            codes = [c.strip() for c in str(anno).split(",")]
            if "*" in codes or msg.code in codes:
                return True
    for code, pattern in suppress:
        if msg.obj is None or code != msg.code:
            continue
        # Accept both "Kind ns/name" and istioctl's older "Kind name.ns" spellings.
        older = f"{msg.obj.kind} {msg.obj.name}{'.' + msg.obj.ns if msg.obj.ns else ''}"
        if _glob(pattern, msg.resource) or _glob(pattern, older):
            return True
    return False


def finish(
    messages: list[Message],
    *,
    namespace: str | None = None,
    suppress: Sequence[tuple[str, str]] = (),
    resolve_lines: bool = True,
) -> list[Message]:
    """Filter (namespace, suppressions), resolve field lines, sort and de-duplicate."""
    kept = []
    for msg in messages:
        if namespace is not None and msg.obj is not None:
            ons = msg.obj.origin_namespace
            if ons and ons != namespace:
                continue
        if _suppressed(msg, suppress):
            continue
        kept.append(msg)
    if resolve_lines:
        lines.resolve(kept)
    out: list[Message] = []
    seen: set[tuple] = set()
    for msg in sorted(kept, key=Message.sort_key):
        key = msg.dedupe_key()
        if key in seen:
            continue
        seen.add(key)
        out.append(msg)
    return out


def analyze(
    resources: Iterable[Resource],
    analyzers: Iterable[str] | None = None,
    *,
    namespace: str | None = None,
    default_namespace: str = "default",
    istio_namespace: str = "istio-system",
    mesh: dict[str, Any] | None = None,
    default_resources: bool = True,
    workloads_from_controllers: bool = True,
    workloads_known: bool | None = None,
    services_known: bool | None = None,
    suppress: Sequence[tuple[str, str]] = (),
    resolve_lines: bool = True,
    now: float | None = None,
) -> AnalysisResult:
    """Run analyzers over ``resources`` and return their messages.

    ``resources`` are :class:`~pilotfish.api.loader.Resource` objects, or anything with a
    ``to_resource()`` method (the config store's stored objects): the control plane calls
    ``analyze(store.list(), workloads_known=True, services_known=True)``.

    - ``analyzers``: Istio analyzer names (``virtualservice.DestinationHostAnalyzer``...); None
      runs the default set. Names of analyzers that do not apply to Pilotfish are reported in
      ``skipped`` with the reason; unknown names raise ``KeyError``.
    - ``namespace``: keep only messages about resources in this namespace (and cluster-scoped
      ones), as ``istioctl analyze -n``; None keeps all (``-A``).
    - ``default_namespace``: the namespace of resources that do not name one.
    - ``mesh``: mesh config (see :mod:`pilotfish.analyze.meshconfig`); Istio's defaults if None.
    - ``default_resources``: assume the default ingress gateway exists (istioctl's files mode).
    - ``workloads_from_controllers``: stand in a Pod for each Deployment (etc.) with no pods.
    - ``workloads_known``: whether the input holds the mesh's workloads, so that "selects no
      workload" checks can run; None decides from the input (any Pod or Deployment...), which
      is how istioctl behaves on files without a cluster. A live store passes True.
    - ``services_known``: the same for services (Services, ServiceEntries), which "host not
      found" checks need.
    - ``suppress``: (code, resource glob) pairs, as ``istioctl analyze -S code=resource``.
    """
    from .not_applicable import NOT_APPLICABLE

    registry = all_analyzers()
    skipped: dict[str, str] = {}
    if analyzers is None:
        chosen = [a for a in registry.values() if a.default]
    else:
        chosen = []
        for name in analyzers:
            if name in registry:
                if registry[name] not in chosen:
                    chosen.append(registry[name])
            elif name in NOT_APPLICABLE:
                skipped[name] = NOT_APPLICABLE[name]
            else:
                raise KeyError(name)
    ctx = build_context(
        resources,
        default_namespace=default_namespace,
        istio_namespace=istio_namespace,
        mesh=mesh,
        default_resources=default_resources,
        workloads_from_controllers=workloads_from_controllers,
        workloads_known=workloads_known,
        services_known=services_known,
        now=now,
    )
    for a in chosen:
        ctx.current = a.name
        a.fn(ctx)
    skipped.update(ctx.unavailable)
    messages = finish(
        ctx.messages, namespace=namespace, suppress=suppress, resolve_lines=resolve_lines
    )
    return AnalysisResult(messages, [a.name for a in chosen], skipped)


__all__ = [
    "AnalysisResult",
    "all_analyzers",
    "analyze",
    "build_context",
    "default_analyzers",
    "finish",
    "kind_key",
]
