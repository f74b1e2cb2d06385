"""Rules of a VirtualService that can never match: a rule after a catch-all one, a rule whose
matches all repeat earlier ones (IST0130), and single matches that repeat or are covered by an
earlier prefix match (IST0131).

Istio reports these from its VirtualService validation, so they run under the analyzer name
``schema.ValidationAnalyzer.VirtualService`` (see :mod:`.schema`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .util import as_dict, as_list, as_str

Unreachable = Callable[[str, str], None]
Ineffective = Callable[[str, str, str], None]


def _strip(v: Any) -> Any:
    """Drop empty values, as a protobuf message's JSON form omits them."""
    if isinstance(v, dict):
        out = {str(k): _strip(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x not in (None, "", 0, False, [], {})}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def match_key(match: Any, drop_name: bool) -> str:
    m = dict(as_dict(match))
    if drop_name:
        m.pop("name", None)
    return json.dumps(_strip(m), sort_keys=True)


def rule_name(rule: dict[str, Any], n: int, http: bool) -> str:
    if http and rule.get("name"):
        return json.dumps(str(rule["name"]), ensure_ascii=False)
    return f"#{n}"


def match_name(match: dict[str, Any], n: int, http: bool) -> str:
    if http and match.get("name"):
        return json.dumps(str(match["name"]), ensure_ascii=False)
    return f"#{n}"


def _exact_or_prefix(sm: Any) -> str:
    sm = as_dict(sm)
    if sm.get("exact"):
        return "exact:" + as_str(sm["exact"])
    if sm.get("prefix"):
        return "prefix:" + as_str(sm["prefix"])
    return ""


@dataclass
class _PrefixMatch:
    route: str
    match: str
    prefix: str
    port: int
    method: str
    authority: str
    headers: dict[str, str]
    query: dict[str, str]
    without_headers: dict[str, str]


def _prefix_match(
    rule: dict[str, Any], rn: int, match: dict[str, Any], mn: int
) -> _PrefixMatch | None:
    prefix = as_str(as_dict(match.get("uri")).get("prefix"))
    if not prefix:
        return None
    method = _exact_or_prefix(match.get("method")) or "exact:GET"

    def fields(name: str) -> dict[str, str]:
        return {str(k): _exact_or_prefix(v) for k, v in as_dict(match.get(name)).items()}

    port = match.get("port")
    return _PrefixMatch(
        rule_name(rule, rn, True),
        match_name(match, mn, True),
        prefix,
        port if isinstance(port, int) else 0,
        method,
        _exact_or_prefix(match.get("authority")),
        fields("headers"),
        fields("queryParams"),
        fields("withoutHeaders"),
    )


def _covers_value(a: str, b: str) -> bool:
    return a == b or a.startswith(b)


def _covers_map(a: dict[str, str], b: dict[str, str]) -> bool:
    if len(a) != len(b):
        return False
    return all(k in b and _covers_value(v, b[k]) for k, v in a.items())


def _covered(a: _PrefixMatch, b: _PrefixMatch) -> bool:
    """Whether the earlier match ``a`` catches every request the later ``b`` would."""
    return (
        b.prefix.startswith(a.prefix)
        and a.port == b.port
        and _covers_value(a.method, b.method)
        and _covers_value(a.authority, b.authority)
        and _covers_map(a.headers, b.headers)
        and _covers_map(a.query, b.query)
        and _covers_map(a.without_headers, b.without_headers)
    )


def analyze_rules(
    rules: list[Any], http: bool, unreachable: Unreachable, ineffective: Ineffective
) -> None:
    seen: dict[str, int] = {}
    catch_all = -1
    prefixes: list[_PrefixMatch] = []
    for rn, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        matches = as_list(rule.get("match"))
        name = rule_name(rule, rn, http)
        if not matches:
            if catch_all >= 0:
                unreachable(name, "only the last rule can have no matches")
            catch_all = rn
            continue
        dups = 0
        for mn, match in enumerate(matches):
            match = as_dict(match)
            if catch_all >= 0:
                unreachable(name, "route without matches defined before")
                continue
            key = match_key(match, drop_name=http)
            if key in seen:
                first = seen[key]
                ineffective(
                    name, match_name(match, mn, http), rule_name(as_dict(rules[first]), first, http)
                )
                dups += 1
                continue
            seen[key] = rn
            if http:
                pm = _prefix_match(rule, rn, match, mn)
                if pm is not None:
                    prefixes.append(pm)
        if dups == len(matches):
            unreachable(name, "all matches used by prior rules")
    for i, a in enumerate(prefixes):
        for b in prefixes[i + 1 :]:
            if b.prefix == a.prefix:
                continue  # exact duplicates were reported above
            if _covered(a, b):
                ineffective(
                    b.route,
                    f"{b.match} of prefix {b.prefix}",
                    f"{a.match} of prefix {a.prefix} on {a.route}",
                )


def analyze_virtual_service(
    spec: dict[str, Any], unreachable: Unreachable, ineffective: Ineffective
) -> None:
    analyze_rules(as_list(spec.get("http")), True, unreachable, ineffective)
    analyze_rules(as_list(spec.get("tcp")), False, unreachable, ineffective)
    analyze_rules(as_list(spec.get("tls")), False, unreachable, ineffective)
