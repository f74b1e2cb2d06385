"""sidecar.SelectorAnalyzer: a Sidecar's workload selector must select pods of its namespace
(IST0101); one pod must not be selected by several Sidecars (IST0110); a namespace must not have
several Sidecars without a selector (IST0111); Sidecars for ambient workloads do nothing
(IST0167)."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import (
    as_dict,
    namespace_in_ambient,
    namespace_obj,
    pod_in_ambient,
    pods_by_namespace,
    selector_matches,
    selector_string,
    str_map,
)


@analyzer(
    "sidecar.SelectorAnalyzer",
    "Validates that sidecars that define a workload selector match at least one pod, and that "
    "there aren't multiple sidecar resources that select overlapping pods",
    ("IST0101", "IST0110", "IST0111", "IST0167"),
)
def sidecar_selectors(ctx: Context) -> None:
    pods_to_sidecars: dict[int, tuple[Obj, list[Obj]]] = {}
    ns_wide: dict[str, list[Obj]] = {}
    pods = pods_by_namespace(ctx)
    for sc in ctx.all("Sidecar"):
        labels = str_map(as_dict(sc.spec.get("workloadSelector")).get("labels"))
        if not labels:
            ns_wide.setdefault(sc.ns, []).append(sc)
            continue
        found = False
        for pod in pods.get(sc.ns, []):
            if selector_matches(labels, pod.labels):
                found = True
                pods_to_sidecars.setdefault(id(pod), (pod, []))[1].append(sc)
        if not found and ctx.need_workloads("selector checks"):
            ctx.report(
                m("ReferencedResourceNotFound"),
                sc,
                "selector",
                selector_string(labels),
                path=("spec", "workloadSelector", "labels"),
            )
    reported: set[int] = set()
    for pod, scs in pods_to_sidecars.values():
        ambient = pod_in_ambient(pod)
        if len(scs) == 1 and not ambient:
            continue
        names = [s.name for s in scs]
        for sc in scs:
            if ambient:
                if id(sc) not in reported:
                    reported.add(id(sc))
                    ctx.report(
                        m("IneffectivePolicy"),
                        sc,
                        "selected workload is in ambient mode, the policy has no impact",
                    )
                continue
            ctx.report(
                m("ConflictingSidecarWorkloadSelectors"),
                sc,
                names,
                pod.ns,
                pod.name,
                path=("metadata", "name"),
            )
    for ns, scs in ns_wide.items():
        if namespace_in_ambient(namespace_obj(ctx, ns)):
            for sc in scs:
                if id(sc) not in reported:
                    reported.add(id(sc))
                    ctx.report(
                        m("IneffectivePolicy"),
                        sc,
                        "namespace is in ambient mode, the policy has no impact",
                    )
            continue
        if len(scs) > 1:
            names = [s.name for s in scs]
            for sc in scs:
                ctx.report(
                    m("MultipleSidecarsWithoutWorkloadSelectors"),
                    sc,
                    names,
                    ns,
                    path=("metadata", "name"),
                )
