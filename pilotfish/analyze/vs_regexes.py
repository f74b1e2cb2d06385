"""virtualservice.RegexAnalyzer: regular expressions in VirtualService matches and CORS origins
must compile as RE2, the syntax the proxy uses (IST0122)."""

from __future__ import annotations

from typing import Any

import re2

from .core import Context, Obj, Path, analyzer
from .messages import m
from .util import as_dict, as_list

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


def regex_error(pattern: str) -> str | None:
    """None when ``pattern`` compiles as RE2, else the reason."""
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        arg = e.args[0] if e.args else str(e)
        return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    return None


def _check(ctx: Context, vs: Obj, sm: Any, where: str, path: Path) -> None:
    sm = as_dict(sm)
    pattern = sm.get("regex")
    if not isinstance(pattern, str) or not pattern:
        return
    err = regex_error(pattern)
    if err is not None:
        ctx.report(m("InvalidRegexp"), vs, where, pattern, err, path=path + ("regex",))


@analyzer(
    "virtualservice.RegexAnalyzer",
    "Checks regex syntax",
    ("IST0122",),
)
def regexes(ctx: Context) -> None:
    for vs in ctx.all("VirtualService"):
        for i, rule in enumerate(as_list(vs.spec.get("http"))):
            rule = as_dict(rule)
            for j, match in enumerate(as_list(rule.get("match"))):
                match = as_dict(match)
                base: Path = ("spec", "http", i, "match", j)
                for field in ("uri", "scheme", "method", "authority"):
                    _check(ctx, vs, match.get(field), field, base + (field,))
                for field in ("headers", "queryParams"):
                    for key, sm in as_dict(match.get(field)).items():
                        _check(ctx, vs, sm, field, base + (field, str(key)))
            for j, origin in enumerate(
                as_list(as_dict(rule.get("corsPolicy")).get("allowOrigins"))
            ):
                _check(
                    ctx,
                    vs,
                    origin,
                    "corsPolicy.allowOrigins",
                    ("spec", "http", i, "corsPolicy", "allowOrigins", j),
                )
