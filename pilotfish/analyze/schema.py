"""schema.ValidationAnalyzer.<Kind>: each resource checked against its kind's schema and rules
(IST0106 for errors, IST0133 for warnings), as Istio validates on admission.

The validation itself lives in :mod:`pilotfish.api.validation` and is imported only when one of
these analyzers runs; if it is not there, the analyzers report that they are unavailable rather
than failing. For VirtualService the unreachable/ineffective rule checks (IST0130, IST0131),
which Istio reports from validation too, are Pilotfish's own (:mod:`.vs_unreachable`) and always
run.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from .core import Context, Obj, Path, analyzer
from .messages import m
from .vs_unreachable import analyze_virtual_service

# Istio kinds Pilotfish reads and validates. (EnvoyFilter and WasmPlugin are not applicable.)
VALIDATED_KINDS = (
    "AuthorizationPolicy",
    "DestinationRule",
    "Gateway",
    "PeerAuthentication",
    "ProxyConfig",
    "RequestAuthentication",
    "ServiceEntry",
    "Sidecar",
    "Telemetry",
    "VirtualService",
    "WorkloadEntry",
    "WorkloadGroup",
)

# Findings validation may also return, that Pilotfish reports itself with Istio's parameters.
OWN_CHECKS = frozenset({"VirtualServiceUnreachableRule", "VirtualServiceIneffectiveMatch"})

_validation: Any = None
_validation_error: str | None = None


def _load_validation() -> Any:
    """``pilotfish.api.validation``, imported once; None (with the reason kept) if missing."""
    global _validation, _validation_error
    if _validation is None and _validation_error is None:
        try:
            mod = importlib.import_module("pilotfish.api.validation")
        except Exception as e:  # missing, or failing to import: analysis goes on without it
            _validation_error = (
                f"pilotfish.api.validation is not available ({type(e).__name__}: {e})"
            )
        else:
            if callable(getattr(mod, "validate", None)):
                _validation = mod
            else:
                _validation_error = "pilotfish.api.validation has no validate()"
    return _validation


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: Any) -> Path | None:
    """``spec.http[0].route`` -> ("spec", "http", 0, "route")."""
    parts = getattr(path, "parts", None)  # pilotfish.api.issues.FieldPath
    if isinstance(parts, tuple):
        return parts or None
    if isinstance(path, (list, tuple)):
        return tuple(path)
    if not isinstance(path, str) or not path:
        return None
    out: list[str | int] = []
    for name, index in _SEGMENT.findall(path):
        out.append(int(index) if index else name)
    return tuple(out) or None


def _validate(ctx: Context, obj: Obj, name: str) -> None:
    mod = _load_validation()
    if mod is None:
        ctx.unavailable[name] = _validation_error or "validation not available"
        return
    try:
        issues = mod.validate(obj.res, ctx.default_namespace or "default")
    except Exception as e:  # a validator bug must not stop the analysis
        ctx.report(m("InternalError"), obj, f"validating {obj.friendly_name}: {e}")
        return
    for issue in issues or ():
        if getattr(issue, "code", None) in OWN_CHECKS:
            continue
        level = str(getattr(issue, "level", "Error"))
        text = str(getattr(issue, "message", issue))
        mtype = (
            m("SchemaWarning") if level.lower().startswith("warn") else m("SchemaValidationError")
        )
        msg = ctx.report(mtype, obj, text, path=parse_path(getattr(issue, "path", None)))
        line = getattr(issue, "line", None)
        if isinstance(line, int) and line > 0 and msg.path is None:
            msg.line = line


def _unreachable_rules(ctx: Context, vs: Obj) -> None:
    def unused(rule: str, reason: str) -> None:
        ctx.report(m("VirtualServiceUnreachableRule"), vs, rule, reason)

    def ineffective(rule: str, match: str, dup: str) -> None:
        ctx.report(m("VirtualServiceIneffectiveMatch"), vs, rule, match, dup)

    analyze_virtual_service(vs.spec, unused, ineffective)


def _make(kind: str) -> None:
    name = f"schema.ValidationAnalyzer.{kind}"
    codes: tuple[str, ...] = ("IST0106", "IST0133")
    if kind == "VirtualService":
        codes += ("IST0130", "IST0131")

    @analyzer(
        name, f"Runs schema validation as an analyzer and reports any violations for {kind}", codes
    )
    def run(ctx: Context) -> None:
        for obj in ctx.all(kind):
            if obj.synthetic:
                continue
            _validate(ctx, obj, name)
            if kind == "VirtualService":
                _unreachable_rules(ctx, obj)


for _kind in VALIDATED_KINDS:
    _make(_kind)
