"""auth.AuthorizationPoliciesAnalyzer: an AuthorizationPolicy should apply to some workload in
the mesh (IST0127), and the namespaces its rules name must exist (IST0101)."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import (
    as_dict,
    as_list,
    as_str,
    known_namespaces,
    namespace_in_ambient,
    namespace_obj,
    pod_in_ambient,
    pod_in_mesh,
    root_namespace,
    selector_matches,
    selector_string,
    workload_selector,
)


def mesh_pod_labels(ctx: Context) -> dict[str, list[dict[str, str]]]:
    """Labels of the pods that have a proxy (sidecar or ambient), by namespace."""

    def build() -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for pod in ctx.all("Pod"):
            lst = out.setdefault(pod.ns, [])
            if (
                pod_in_mesh(ctx, pod)
                or pod_in_ambient(pod)
                or namespace_in_ambient(namespace_obj(ctx, pod.ns))
            ):
                lst.append(pod.labels)
        return out

    return ctx.cached("mesh_pod_labels", build)


def namespace_matches(ns: str, pattern: str) -> bool:
    """Istio's namespace patterns: ``*``, ``prefix*``, ``*suffix`` or an exact name."""
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return ns.endswith(pattern[1:])
    if pattern.endswith("*"):
        return ns.startswith(pattern[:-1])
    return ns.lower() == pattern.lower()


def _has_target_ref(ap: Obj) -> bool:
    return bool(ap.spec.get("targetRef")) or bool(as_list(ap.spec.get("targetRefs")))


@analyzer(
    "auth.AuthorizationPoliciesAnalyzer",
    "Checks the validity of authorization policies",
    ("IST0101", "IST0127"),
)
def authorization_policies(ctx: Context) -> None:
    pods = mesh_pod_labels(ctx)
    root = root_namespace(ctx)
    namespaces = known_namespaces(ctx)
    for ap in ctx.all("AuthorizationPolicy"):
        sel = workload_selector(ap)
        if not _has_target_ref(ap) and ctx.need_workloads("workload selection checks"):
            if ap.ns == root:
                if sel is not None and not any(
                    selector_matches(sel, p) for lst in pods.values() for p in lst
                ):
                    ctx.report(
                        m("NoMatchingWorkloadsFound"),
                        ap,
                        selector_string(sel),
                        path=("spec", "selector"),
                    )
            elif sel is None:
                if not pods.get(ap.ns):
                    ctx.report(m("NoMatchingWorkloadsFound"), ap, "", path=("metadata", "name"))
            elif not any(selector_matches(sel, p) for p in pods.get(ap.ns, [])):
                ctx.report(
                    m("NoMatchingWorkloadsFound"),
                    ap,
                    selector_string(sel),
                    path=("spec", "selector"),
                )
        for i, rule in enumerate(as_list(ap.spec.get("rules"))):
            for j, frm in enumerate(as_list(as_dict(rule).get("from"))):
                source = as_dict(as_dict(frm).get("source"))
                for field in ("namespaces", "notNamespaces"):
                    for k, pattern in enumerate(as_list(source.get(field))):
                        pattern = as_str(pattern)
                        if not any(namespace_matches(ns, pattern) for ns in namespaces):
                            ctx.report(
                                m("ReferencedResourceNotFound"),
                                ap,
                                "namespace",
                                pattern,
                                path=("spec", "rules", i, "from", j, "source", field, k),
                            )
