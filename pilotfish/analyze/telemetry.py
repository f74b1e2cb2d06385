"""Telemetry analyzers: selectors that match nothing or overlap (IST0101, IST0159), several
namespace-wide Telemetries in one namespace (IST0160), access logging with no provider when the
mesh has no default one (IST0157), and the deprecated Lightstep tracer (IST0002)."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import (
    as_dict,
    as_list,
    as_str,
    pods_by_namespace,
    selector_matches,
    selector_string,
    workload_selector,
)


@analyzer(
    "telemetry.SelectorAnalyzer",
    "Validates that telemetries that define a selector match at least one pod, and that there "
    "aren't multiple telemetry resources that select overlapping pods",
    ("IST0101", "IST0159"),
)
def telemetry_selectors(ctx: Context) -> None:
    pods = pods_by_namespace(ctx)
    pods_to_telemetry: dict[int, tuple[Obj, list[Obj]]] = {}
    for t in ctx.all("Telemetry"):
        sel = workload_selector(t)
        if not sel:
            continue
        found = False
        for pod in pods.get(t.ns, []):
            if selector_matches(sel, pod.labels):
                found = True
                pods_to_telemetry.setdefault(id(pod), (pod, []))[1].append(t)
        if not found and ctx.need_workloads("selector checks"):
            ctx.report(
                m("ReferencedResourceNotFound"),
                t,
                "selector",
                selector_string(sel),
                path=("spec", "selector", "matchLabels"),
            )
    for pod, ts in pods_to_telemetry.values():
        if len(ts) < 2:
            continue
        names = [t.name for t in ts]
        for t in ts:
            ctx.report(
                m("ConflictingTelemetryWorkloadSelectors"),
                t,
                names,
                pod.ns,
                pod.name,
                path=("metadata", "name"),
            )


@analyzer(
    "telemetry.DefaultSelectorAnalyzer",
    "Validates that there aren't multiple telemetry resources that have no selector",
    ("IST0160",),
)
def telemetry_default_selectors(ctx: Context) -> None:
    by_ns: dict[str, list[Obj]] = {}
    for t in ctx.all("Telemetry"):
        if (
            not workload_selector(t)
            and not as_list(t.spec.get("targetRefs"))
            and not t.spec.get("targetRef")
        ):
            by_ns.setdefault(t.ns, []).append(t)
    for ns, ts in by_ns.items():
        if len(ts) < 2:
            continue
        names = [t.name for t in ts]
        for t in ts:
            ctx.report(
                m("MultipleTelemetriesWithoutWorkloadSelectors"),
                t,
                names,
                ns,
                path=("metadata", "name"),
            )


@analyzer(
    "telemetry.ProviderAnalyzer",
    "Validates that providers in telemetry resource is valid",
    ("IST0157",),
)
def telemetry_providers(ctx: Context) -> None:
    if as_list(as_dict(ctx.mesh.get("defaultProviders")).get("accessLogging")):
        return
    for t in ctx.all("Telemetry"):
        for i, log in enumerate(as_list(t.spec.get("accessLogging"))):
            log = as_dict(log)
            if log.get("disabled") is True:
                continue
            if not as_list(log.get("providers")):
                ctx.report(
                    m("InvalidTelemetryProvider"),
                    t,
                    t.name,
                    t.ns,
                    path=("spec", "accessLogging", i),
                )


@analyzer(
    "telemetry.LightstepAnalyzer",
    "Validates that lightstep provider is still used",
    ("IST0002",),
)
def telemetry_lightstep(ctx: Context) -> None:
    names = {
        as_str(p.get("name"))
        for p in (as_dict(x) for x in as_list(ctx.mesh.get("extensionProviders")))
        if "lightstep" in p
    }
    if not names:
        return
    for t in ctx.all("Telemetry"):
        for tracing in as_list(t.spec.get("tracing")):
            for p in as_list(as_dict(tracing).get("providers")):
                name = as_str(as_dict(p).get("name"))
                if name in names:
                    ctx.report(
                        m("Deprecated"),
                        t,
                        f"The Lightstep provider {name} is deprecated, please migrate to an OpenTelemetry provider",
                    )
