"""Semantic rules of ``telemetry.istio.io`` Telemetry, after Istio's admission webhook."""

from __future__ import annotations

from pilotfish.api.kinds import TELEMETRY
from pilotfish.api.rules import SPEC, Ctx, rule
from pilotfish.api.rules.common import check_policy_targets
from pilotfish.api.types import telemetry as t


@rule(TELEMETRY, "Telemetry")
def validate_telemetry(tel: t.Telemetry, ctx: Ctx) -> None:
    spec = tel.spec
    check_policy_targets(ctx, spec, SPEC)
    for i, m in enumerate(spec.metrics):
        p = SPEC.f("metrics").i(i)
        _check_providers(ctx, p.f("providers"), m.providers)
        for j, o in enumerate(m.overrides):
            op = p.f("overrides").i(j)
            for name, to in o.tag_overrides.items():
                tp = op.f("tagOverrides").k(name)
                if name == "":
                    ctx.warn(tp, "tagOverrides.name may not be empty")
                if to.operation == "UPSERT" and not to.value:
                    ctx.error(tp.f("value"), "tagOverrides.value must be set when operation is UPSERT")
                elif to.operation == "REMOVE" and to.value:
                    ctx.error(tp.f("value"), "tagOverrides.value may only be set when operation is UPSERT")
            if o.match is not None and o.match.custom_metric is not None and not o.match.custom_metric:
                ctx.error(op.f("match").f("customMetric"), "customMetric may not be empty")
    if len(spec.tracing) > 1:
        ctx.warn(SPEC.f("tracing"), "multiple tracing is not currently supported")
    for i, tr in enumerate(spec.tracing):
        p = SPEC.f("tracing").i(i)
        if len(tr.providers) > 1:
            ctx.warn(p.f("providers"), "multiple providers is not currently supported")
        _check_providers(ctx, p.f("providers"), tr.providers)
        if tr.random_sampling_percentage is not None and not 0 <= tr.random_sampling_percentage <= 100:
            ctx.error(p.f("randomSamplingPercentage"), "randomSamplingPercentage must be in range [0.0, 100.0]")
        for name, tag in tr.custom_tags.items():
            tp = p.f("customTags").k(name)
            if name == "":
                ctx.error(tp, "tag name may not be empty")
            if tag.literal is not None and not tag.literal.value:
                ctx.error(tp.f("literal").f("value"), "literal tag value may not be empty")
            elif tag.header is not None and not tag.header.name:
                ctx.error(tp.f("header").f("name"), "header tag name may not be empty")
            elif tag.environment is not None and not tag.environment.name:
                ctx.error(tp.f("environment").f("name"), "environment tag name may not be empty")
    for i, al in enumerate(spec.access_logging):
        _check_providers(ctx, SPEC.f("accessLogging").i(i).f("providers"), al.providers)


def _check_providers(ctx: Ctx, path, providers) -> None:
    for i, p in enumerate(providers):
        if not p.name:
            ctx.error(path.i(i).f("name"), "providers.name may not be empty")
            return
