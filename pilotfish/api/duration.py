"""Durations as Istio writes them: ``"1s"``, ``"100ms"``, ``"1h2m3.5s"``.

Istio reads protobuf ``Duration`` fields with Go's ``time.ParseDuration`` grammar: an optional
sign, then one or more decimal numbers each followed by a unit (``ns``, ``us``/``µs``, ``ms``,
``s``, ``m``, ``h``). ``"0"`` alone is allowed. Values are exact to the nanosecond.
"""

from __future__ import annotations

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX_NS = (1 << 63) - 1  # Go's time.Duration is an int64 of nanoseconds


def parse_duration_ns(text: str) -> int:
    """Parse to whole nanoseconds. Raises ``ValueError`` naming the problem."""
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string like \"1s\" or \"100ms\", got {type(text).__name__}")
    orig = text
    s = text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {orig!r}: empty")
    total = 0
    i, n = 0, len(s)
    while i < n:
        # the number: digits, optional fraction
        start = i
        while i < n and s[i].isascii() and s[i].isdigit():
            i += 1
        int_part = s[start:i]
        frac_part = ""
        if i < n and s[i] == ".":
            i += 1
            fstart = i
            while i < n and s[i].isascii() and s[i].isdigit():
                i += 1
            frac_part = s[fstart:i]
        if not int_part and not frac_part:
            raise ValueError(
                f"invalid duration {orig!r}: expected a number at {s[start:] or 'end'!r} "
                "(write it like \"1s\", \"100ms\" or \"1h2m3.5s\")"
            )
        # the unit
        ustart = i
        while i < n and s[i] != "." and not (s[i].isascii() and s[i].isdigit()):
            i += 1
        unit = s[ustart:i]
        if not unit:
            raise ValueError(
                f"invalid duration {orig!r}: missing unit after {s[start:i] or s[start:]!r} "
                "(units: ns, us, ms, s, m, h)"
            )
        scale = _UNITS_NS.get(unit)
        if scale is None:
            raise ValueError(f"invalid duration {orig!r}: unknown unit {unit!r} (units: ns, us, ms, s, m, h)")
        value = int(int_part or "0") * scale
        if frac_part:
            # exact fractional part, truncated to the nanosecond as Go does
            value += int(frac_part) * scale // (10 ** len(frac_part))
        total += value
        if total > _MAX_NS:
            raise ValueError(f"invalid duration {orig!r}: too large")
    return -total if neg else total


def parse_duration(text: str) -> float:
    """Parse a duration to seconds (a float). Raises ``ValueError`` with a clear message."""
    return parse_duration_ns(text) / 1_000_000_000


def format_duration(seconds: float) -> str:
    """A compact Go-style rendering: ``1.5s``, ``100ms``, ``1h0m0s`` style is avoided for reads."""
    ns = round(seconds * 1_000_000_000)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns % 1_000_000_000 == 0:
        return f"{sign}{ns // 1_000_000_000}s"
    if ns % 1_000_000 == 0:
        return f"{sign}{ns // 1_000_000}ms"
    if ns % 1_000 == 0:
        return f"{sign}{ns // 1_000}us"
    return f"{sign}{ns}ns"
