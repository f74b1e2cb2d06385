"""Rule helpers shared by Istio kinds: durations, percentages, selectors, target references,
destinations and string matches."""

from __future__ import annotations

from pilotfish.api import checks
from pilotfish.api.duration import parse_duration_ns
from pilotfish.api.issues import FieldPath
from pilotfish.api.rules import Ctx


def check_duration(ctx: Ctx, path: FieldPath, value: str | None) -> None:
    """Istio's ``ValidateDuration``: at least 1ms, whole milliseconds."""
    if value is None:
        return
    try:
        ns = parse_duration_ns(value)
    except ValueError as e:
        ctx.error(path, str(e))
        return
    if ns < 1_000_000:
        ctx.error(path, "duration must be greater than 1ms")
    elif ns % 1_000_000:
        ctx.error(path, "only durations to ms precision are supported")


def check_percent_int(ctx: Ctx, path: FieldPath, value: int | None) -> None:
    if value is not None and not 0 <= value <= 100:
        ctx.error(path, f"percentage {value} is not in range 0..100")


def check_percentage(ctx: Ctx, path: FieldPath, value: float) -> None:
    """A fractional ``Percent``: 0, or within [0.0001, 100]."""
    if value < 0 or value > 100 or 0 < value < 0.0001:
        ctx.error(path, f"percentage {value:g} is neither 0.0, nor in range [0.0001, 100.0]")


def check_workload_selector(ctx: Ctx, path: FieldPath, labels: dict[str, str] | None, present: bool,
                            empty_warning: str = "workload selector specified without labels",
                            empty_path: FieldPath | None = None) -> None:
    """Selector labels: no empty key, no wildcard; an empty selector is a warning (Istio's
    text differs by kind: ``empty_warning``, reported at ``empty_path`` or ``path``)."""
    if not present:
        return
    labels = labels or {}
    for k, v in labels.items():
        if k == "":
            ctx.error(path.k(k), f'empty key is not supported in selector: "{k}={v}"')
        if "*" in k or "*" in v:
            ctx.error(path.k(k), f'wildcard is not supported in selector: "{k}={v}"')
    if not labels:
        ctx.warn(empty_path or path, empty_warning)


_ALLOWED_TARGETS = {("", "Service"), ("networking.istio.io", "ServiceEntry"), ("gateway.networking.k8s.io", "Gateway")}


def check_target_ref(ctx: Ctx, path: FieldPath, ref) -> None:
    if ref is None:
        return
    if not ref.name:
        ctx.error(path.f("name"), "targetRef name must be set")
    if ref.namespace:
        ctx.error(path.f("namespace"), "targetRef namespace must not be set; cross namespace referencing is not supported")
    group = "" if ref.group in ("", "core") else ref.group
    if (group, ref.kind) not in _ALLOWED_TARGETS:
        ctx.error(
            path,
            "targetRef must be to one of Service, networking.istio.io/ServiceEntry or "
            f"gateway.networking.k8s.io/Gateway, but was {ref.group}/{ref.kind}",
        )


def check_policy_targets(ctx: Ctx, spec, spec_path: FieldPath) -> None:
    """``selector`` / ``targetRef`` / ``targetRefs``: at most one, each well formed."""
    count = (spec.selector is not None) + (spec.target_ref is not None) + (len(spec.target_refs) > 0)
    if count > 1:
        ctx.error(spec_path, "only one of targetRefs or workloadSelector can be set")
    if spec.selector is not None:
        check_workload_selector(ctx, spec_path.f("selector").f("matchLabels"), spec.selector.match_labels, True)
    check_target_ref(ctx, spec_path.f("targetRef"), spec.target_ref)
    for i, r in enumerate(spec.target_refs):
        check_target_ref(ctx, spec_path.f("targetRefs").i(i), r)


def check_subset_name(ctx: Ctx, path: FieldPath, name: str) -> None:
    if not name:
        ctx.error(path, "subset name cannot be empty")
    elif not checks.is_istio_dns_label(name):
        ctx.error(path, f"subset name is invalid: {name}")


def check_destination(ctx: Ctx, path: FieldPath, dest) -> None:
    if dest is None:
        return
    if dest.host == "*":
        ctx.error(path.f("host"), f"invalid destination host {dest.host}")
    else:
        ctx.check(path.f("host"), checks.validate_wildcard_domain(dest.host))
    if dest.subset:
        check_subset_name(ctx, path.f("subset"), dest.subset)
    if dest.port is not None:
        ctx.check(path.f("port").f("number"), checks.validate_port(dest.port.number))


def check_string_match(ctx: Ctx, path: FieldPath, sm, where: str, *, allow_empty_prefix: bool = False) -> None:
    if sm is None:
        return
    if sm.prefix is not None and sm.prefix == "" and not allow_empty_prefix:
        ctx.error(path.f("prefix"), f'"{where}": prefix string match should not be empty')
    if sm.regex is not None:
        if sm.regex == "":
            ctx.error(path.f("regex"), f'"{where}": regex string match should not be empty')
        else:
            err = checks.validate_regex(sm.regex)
            if err:
                ctx.error(path.f("regex"), f'"{where}": {err}')


def check_istio_labels(ctx: Ctx, path: FieldPath, labels: dict[str, str]) -> None:
    ctx.check_all(path, checks.validate_istio_labels(labels))


def check_port_name(ctx: Ctx, path: FieldPath, name: str) -> None:
    if not checks.is_istio_dns_label(name):
        ctx.error(path, f"invalid port name: {name}")
