"""HTTP filters: fault injection, CORS and header edits, plus the string matchers they share
with the router.

Every filter has the same two methods::

    on_request(req) -> None | LocalReply | Delay
    on_response(req, status, headers) -> None      # edits ``headers`` (a list of pairs) in place

``None`` lets the request continue; a :class:`~pilotfish.proxy.http.LocalReply` answers it
(the remaining filters and the router are skipped); a :class:`Delay` asks the pipeline to
sleep, record the ``DI`` flag and then continue -- or, when ``Delay.then`` is set, answer with
that reply (an injected delay followed by an injected abort, as Envoy's fault filter does).

Filters are built once, when the configuration changes, from the model objects of one route;
they keep no per-request state, so one instance serves every request on that route. Anything
random goes through the ``rand`` callable given at construction (``random.random`` by
default), so tests can script it.

This module is sans-IO: no sockets, no clock, no event loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

import re2

from pilotfish.proxy.http import FI, LocalReply, Request
from pilotfish.proxy.model import CorsPolicy, Fault, HeaderOps, StringMatch

__all__ = [
    "CompiledHeaderOps",
    "CorsFilter",
    "Delay",
    "FaultFilter",
    "Filter",
    "HeaderOpsFilter",
    "apply_request_ops",
    "apply_response_ops",
    "compile_header_ops",
    "compile_regex",
    "compile_string_match",
    "describe_string_match",
]

Rand = Callable[[], float]


# --------------------------------------------------------------------------- string matching

try:  # google-re2's own wrapper costs several microseconds per call; its core is sub-microsecond
    from re2 import _re2 as _re2_core

    _ANCHOR_BOTH = re2._Anchor.ANCHOR_BOTH

    def _fullmatcher(pattern: str) -> Callable[[str], bool]:
        opts = re2.Options()
        opts.never_capture = True
        opts.log_errors = False
        rx = _re2_core.RE2(pattern.encode(), opts)
        if not rx.ok():
            err = rx.error()
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            raise ValueError(f"invalid regex {pattern!r}: {err}")
        match = rx.Match

        def fullmatch(s: str) -> bool:
            b = s.encode()
            return match(_ANCHOR_BOTH, b, 0, len(b))[0][0] >= 0

        return fullmatch

    _fullmatcher("a|b")  # fail at import, not on the request path, if the internals moved
except Exception:  # pragma: no cover - other google-re2 versions

    def _fullmatcher(pattern: str) -> Callable[[str], bool]:
        fm = compile_regex(pattern).fullmatch
        return lambda s: fm(s) is not None


def compile_regex(pattern: str):  # -> re2._Regexp
    """Compile an RE2 pattern (for substitutions), turning RE2's error into a ValueError."""
    opts = re2.Options()
    opts.log_errors = False
    try:
        return re2.compile(pattern, opts)
    except re2.error as e:
        raise ValueError(f"invalid regex {pattern!r}: {e}") from None


def compile_string_match(
    sm: StringMatch, ignore_case: bool = False
) -> Callable[[str], bool] | None:
    """A predicate over a value that is present, or ``None`` when any present value matches
    (``present: true`` or an empty match).

    ``ignore_case`` (or ``sm.ignore_case``) applies to exact, prefix and suffix; as in Envoy
    it has no effect on a regex, which must match the whole value (RE2 syntax).
    ``present: false`` is the caller's business (it is about absence, not a value).
    """
    ci = ignore_case or sm.ignore_case
    if sm.exact is not None:
        if ci:
            e = sm.exact.lower()
            return lambda s: s.lower() == e
        return sm.exact.__eq__
    if sm.prefix is not None:
        p = sm.prefix
        if not p:
            return None
        if ci:
            p, n = p.lower(), len(p)
            return lambda s: s[:n].lower() == p
        return lambda s: s.startswith(p)
    if sm.suffix is not None:
        x = sm.suffix
        if not x:
            return None
        if ci:
            x, n = x.lower(), len(x)
            return lambda s: len(s) >= n and s[-n:].lower() == x
        return lambda s: s.endswith(x)
    if sm.regex is not None:
        return _fullmatcher(sm.regex)
    return None


def describe_string_match(sm: StringMatch | None) -> str:
    """``prefix '/api'`` -- for traces, explain and error messages."""
    if sm is None:
        return "any"
    for k in ("exact", "prefix", "suffix", "regex"):
        v = getattr(sm, k)
        if v is not None:
            return f"{k} {v!r}" + (" (ignore case)" if sm.ignore_case and k != "regex" else "")
    if sm.present is False:
        return "absent"
    return "present"


# --------------------------------------------------------------------------- the interface


class Delay:
    """Returned by ``on_request``: sleep ``seconds``, record ``DI``, then continue -- or answer
    with ``then`` when it is set (a fault that both delays and aborts)."""

    __slots__ = ("seconds", "then")

    def __init__(self, seconds: float, then: LocalReply | None = None) -> None:
        self.seconds = seconds
        self.then = then

    def __repr__(self) -> str:
        return f"Delay({self.seconds}, then={self.then!r})"


class Filter(Protocol):
    def on_request(self, req: Request) -> None | LocalReply | Delay: ...

    def on_response(self, req: Request, status: int, headers: list[tuple[str, str]]) -> None: ...


# --------------------------------------------------------------------------- fault injection

_ABORT_BODY = b"fault filter abort"


class FaultFilter:
    """Istio's ``HTTPFaultInjection`` (Envoy's fault filter): a fixed delay for a percentage of
    requests, an abort with a status for a percentage of requests; both may apply to the same
    request (delay first). Decisions are drawn in that order: delay, then abort."""

    __slots__ = ("delay", "_delay_p", "abort_status", "_abort_p", "_rand", "_delay_only")

    def __init__(self, fault: Fault, rand: Rand = random.random) -> None:
        self._rand = rand
        d, a = fault.delay, fault.abort
        # probability in [0, 1]; None: never; 1.0 is "always" and draws nothing.
        self.delay: float | None = None
        self._delay_p: float | None = None
        if d is not None and d.percentage > 0:
            self.delay = float(d.fixed_delay)
            self._delay_p = d.percentage / 100.0
        self.abort_status: int | None = None
        self._abort_p: float | None = None
        if a is not None and a.percentage > 0:
            self.abort_status = a.http_status
            self._abort_p = a.percentage / 100.0
        self._delay_only = Delay(self.delay) if self.delay is not None else None

    @property
    def active(self) -> bool:
        """False when every percentage is 0: the filter would never do anything."""
        return self._delay_p is not None or self._abort_p is not None

    def _abort_reply(self) -> LocalReply:
        return LocalReply(
            self.abort_status,  # type: ignore[arg-type]
            _ABORT_BODY,
            [("content-type", "text/plain")],
            flag=FI,
            details="fault_filter_abort",
        )

    def on_request(self, req: Request) -> None | LocalReply | Delay:
        p = self._delay_p
        delayed = p is not None and (p >= 1.0 or self._rand() < p)
        p = self._abort_p
        if p is not None and (p >= 1.0 or self._rand() < p):
            if delayed:
                return Delay(self.delay, self._abort_reply())  # type: ignore[arg-type]
            return self._abort_reply()
        return self._delay_only if delayed else None

    def on_response(self, req: Request, status: int, headers: list[tuple[str, str]]) -> None:
        return None


# --------------------------------------------------------------------------- CORS


class CorsFilter:
    """Istio's ``CorsPolicy`` with Envoy's CORS filter behaviour.

    * A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an
      allowed origin is answered here: 200 with ``access-control-allow-origin`` (the origin
      itself), ``-allow-methods``, ``-allow-headers``, ``-max-age``, ``-allow-credentials``
      (each only when configured).
    * A preflight from an origin that is not allowed is forwarded upstream
      (``unmatched_preflights: FORWARD``, Istio's default) or answered with a bare 200
      (``IGNORE``).
    * Any other request from an allowed origin gets ``access-control-allow-origin``,
      ``-allow-credentials`` and ``-expose-headers`` on its response.

    An allowed origin matching ``*`` (e.g. ``exact: "*"``) allows every origin, as in Envoy.
    """

    __slots__ = (
        "policy",
        "_any",
        "_exact",
        "_others",
        "_forward",
        "_preflight",
        "_simple",
        "_simple_names",
    )

    def __init__(self, policy: CorsPolicy) -> None:
        self.policy = policy
        exact: set[str] = set()
        others: list[Callable[[str], bool]] = []
        any_origin = False
        for sm in policy.allow_origins:
            pred = compile_string_match(sm)
            if pred is None or pred("*"):
                any_origin = True
            elif sm.exact is not None and not sm.ignore_case:
                exact.add(sm.exact)
            else:
                others.append(pred)
        self._any = any_origin
        self._exact = frozenset(exact)
        self._others = tuple(others)
        self._forward = policy.unmatched_preflights == "FORWARD"
        creds = [("access-control-allow-credentials", "true")] if policy.allow_credentials else []
        pre: list[tuple[str, str]] = list(creds)
        if policy.allow_methods:
            pre.append(("access-control-allow-methods", ",".join(policy.allow_methods)))
        if policy.allow_headers:
            pre.append(("access-control-allow-headers", ",".join(policy.allow_headers)))
        if policy.max_age is not None:
            pre.append(("access-control-max-age", str(int(float(policy.max_age)))))
        self._preflight = tuple(pre)
        simple = list(creds)
        if policy.expose_headers:
            simple.append(("access-control-expose-headers", ",".join(policy.expose_headers)))
        self._simple = tuple(simple)
        self._simple_names = frozenset(["access-control-allow-origin"] + [n for n, _ in simple])

    def origin_allowed(self, origin: str) -> bool:
        if self._any or origin in self._exact:
            return True
        for pred in self._others:
            if pred(origin):
                return True
        return False

    def on_request(self, req: Request) -> None | LocalReply | Delay:
        h = req.headers
        origin = h.get("origin")
        if not origin or req.method != "OPTIONS" or not h.get("access-control-request-method"):
            return None
        if self.origin_allowed(origin):
            headers = [("access-control-allow-origin", origin)]
            headers.extend(self._preflight)
            return LocalReply(200, b"", headers, details="cors_preflight")
        if self._forward:
            return None
        return LocalReply(200, b"", None, details="cors_preflight_ignored")

    def on_response(self, req: Request, status: int, headers: list[tuple[str, str]]) -> None:
        h = req.headers
        origin = h.get("origin")
        if not origin:
            return
        if req.method == "OPTIONS" and h.get("access-control-request-method"):
            return  # a preflight: answered by on_request or forwarded as not allowed
        if not self.origin_allowed(origin):
            return
        names = self._simple_names
        headers[:] = [kv for kv in headers if kv[0] not in names]
        headers.append(("access-control-allow-origin", origin))
        headers.extend(self._simple)


# --------------------------------------------------------------------------- header edits

_AUTHORITY_NAMES = ("host", ":authority")


class CompiledHeaderOps:
    """Istio's ``headers.request`` / ``headers.response`` (set, add, remove), ready to apply.

    Envoy's order: removals first, then ``set`` (replaces), then ``add`` (appends). Names are
    lowercased. On the request side, a ``set`` of ``host`` / ``:authority`` becomes an
    authority rewrite (``authority``), as Istio translates it."""

    __slots__ = ("remove", "set", "add", "authority", "drop", "append")

    def __init__(self, ops: HeaderOps, request_side: bool) -> None:
        sets = [(k.lower(), v) for k, v in ops.set.items()]
        self.authority: str | None = None
        if request_side:
            for name, value in sets:
                if name in _AUTHORITY_NAMES:
                    self.authority = value
            sets = [kv for kv in sets if kv[0] not in _AUTHORITY_NAMES]
        self.remove = tuple(dict.fromkeys(k.lower() for k in ops.remove))
        self.set = tuple(sets)
        self.add = tuple((k.lower(), v) for k, v in ops.add.items())
        # response side, one pass over the list: drop these names, then append these pairs
        self.drop = frozenset(self.remove) | frozenset(n for n, _ in self.set)
        self.append = self.set + self.add

    def __bool__(self) -> bool:
        return bool(self.remove or self.set or self.add or self.authority is not None)

    def __repr__(self) -> str:
        return (
            f"CompiledHeaderOps(remove={list(self.remove)}, set={dict(self.set)}, "
            f"add={dict(self.add)}, authority={self.authority!r})"
        )


def compile_header_ops(ops: HeaderOps | None, request_side: bool) -> CompiledHeaderOps | None:
    """``None`` when there is nothing to do."""
    if ops is None:
        return None
    c = CompiledHeaderOps(ops, request_side)
    return c if c else None


def apply_request_ops(
    ops: CompiledHeaderOps, headers: dict[str, str], req: Request | None = None
) -> None:
    """Apply request-side ops to a request's header dict. ``add`` joins onto an existing value
    with ``", "``. An authority rewrite goes through ``req.set_authority`` when ``req`` is
    given (keeping ``req.authority`` in step), else into ``headers["host"]``."""
    for name in ops.remove:
        headers.pop(name, None)
    for name, value in ops.set:
        headers[name] = value
    for name, value in ops.add:
        old = headers.get(name)
        headers[name] = value if old is None else f"{old}, {value}"
    if ops.authority is not None:
        if req is not None:
            req.set_authority(ops.authority)
        else:
            headers["host"] = ops.authority


def apply_response_ops(ops: CompiledHeaderOps, headers: list[tuple[str, str]]) -> None:
    """Apply response-side ops to a list of (name, value) pairs, in place."""
    drop = ops.drop
    if drop:
        headers[:] = [kv for kv in headers if kv[0] not in drop]
    headers.extend(ops.append)


class HeaderOpsFilter:
    """A route's (or a destination's) header edits as a filter. ``request``/``response`` are
    :class:`CompiledHeaderOps` or ``None``."""

    __slots__ = ("request", "response")

    def __init__(
        self, request: CompiledHeaderOps | None, response: CompiledHeaderOps | None
    ) -> None:
        self.request = request
        self.response = response

    @classmethod
    def build(cls, request: HeaderOps | None, response: HeaderOps | None) -> HeaderOpsFilter | None:
        """From model objects; ``None`` when neither side has anything to do."""
        rq = compile_header_ops(request, True)
        rs = compile_header_ops(response, False)
        if rq is None and rs is None:
            return None
        return cls(rq, rs)

    def on_request(self, req: Request) -> None:
        ops = self.request
        if ops is not None:
            apply_request_ops(ops, req.headers, req)

    def on_response(self, req: Request, status: int, headers: list[tuple[str, str]]) -> None:
        ops = self.response
        if ops is not None:
            apply_response_ops(ops, headers)
