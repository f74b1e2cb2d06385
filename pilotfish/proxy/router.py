"""The router: route tables compiled for the request path.

:class:`Router` compiles every :class:`~pilotfish.proxy.model.RouteConfiguration` of a proxy
once, when the configuration changes. Matching a request is then:

1. pick the virtual host by authority, as Envoy does -- exact domain, then suffix wildcards
   (``*.foo.com``, longest first), then prefix wildcards (``foo.*``, longest first), then
   ``*``; case-insensitive; the authority as received is tried first, then without its port
   (Istio emits both ``reviews`` and ``reviews:9080``), and ``*`` only after both. The
   answer is cached per authority string, so a steady stream of requests costs one dict
   lookup here (a table whose only virtual host is ``*`` skips even that);
2. try its routes in order, first match wins. Each route's conditions are compiled into
   one closure (or none at all: a route that matches everything, such as prefix ``/``,
   costs nothing), and routes after an unconditional one are never tried.

The result is a :class:`CompiledRoute` carrying everything the pipeline needs, precomputed:
its filters (fault, cors, header edits -- only those configured), timeout, retries,
weighted destinations (``pick``), mirrors, rewrite, redirect and direct replies.

Routes whose ``source_labels`` / ``source_namespace`` do not select this proxy are dropped
at compile time (Istio does it when it generates the configuration); they stay visible to
:meth:`RouteTable.match_trace` so ``pilotfish explain`` can say why they never match.

Semantics follow Istio's ``HTTPMatchRequest`` as Envoy implements it: a uri regex must
match the whole path (RE2, query excluded); ``ignore_uri_case`` applies to exact and
prefix; an empty header or query-parameter match means "present"; a ``without_headers``
entry is inverted with a missing header treated as empty (as Istio configures Envoy), so
the route matches when the header is absent.

This module is sans-IO: no sockets, no clock, no event loop.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any, Literal

from pilotfish.proxy.filters import (
    CompiledHeaderOps,
    CorsFilter,
    FaultFilter,
    HeaderOpsFilter,
    compile_header_ops,
    compile_regex,
    compile_string_match,
    describe_string_match,
)
from pilotfish.proxy.http import LocalReply, Request
from pilotfish.proxy.model import (
    DirectResponse,
    Redirect,
    Route,
    RouteConfiguration,
    RouteMatch,
    StringMatch,
    VirtualHost,
)

__all__ = [
    "CompiledCluster",
    "CompiledRoute",
    "RouteConfigError",
    "RouteTable",
    "Router",
]

Check = Callable[[Request], bool]
# (what it checks, the check, what the request had -- for traces)
Condition = tuple[str, Check, Callable[[Request], Any]]

_AUTHORITY_CACHE_MAX = 1024
_MISS: Any = object()


class RouteConfigError(ValueError):
    """A route table that cannot be compiled (bad regex, bad domain...); names the place."""


# --------------------------------------------------------------------------- helpers


def split_host_port(authority: str) -> tuple[str, str | None]:
    """``"a:80"`` -> ``("a", "80")``; ``"[::1]:80"`` -> ``("[::1]", "80")``; no port -> None."""
    if authority.startswith("["):
        end = authority.find("]")
        if end > 0 and authority.startswith(":", end + 1):
            return authority[: end + 1], authority[end + 2 :]
        return authority, None
    c = authority.rfind(":")
    if c >= 0 and authority.find(":") == c:  # one colon: host:port (not a bare IPv6 address)
        return authority[:c], authority[c + 1 :]
    return authority, None


def _combine(checks: list[Check]) -> Check | None:
    """AND the checks into one callable; ``None`` when there is nothing to check."""
    n = len(checks)
    if n == 0:
        return None
    if n == 1:
        return checks[0]
    if n == 2:
        a, b = checks
        return lambda req: a(req) and b(req)
    if n == 3:
        a, b, c = checks
        return lambda req: a(req) and b(req) and c(req)
    t = tuple(checks)

    def all_of(req: Request) -> bool:
        for c in t:
            if not c(req):
                return False
        return True

    return all_of


# --------------------------------------------------------------------------- conditions


def _uri_condition(
    sm: StringMatch | None, ignore_case: bool
) -> tuple[Condition | None, int | None]:
    """The uri condition (None: any path) and, for rewrites, the length of the matched prefix
    (None: the whole path is replaced). A missing uri match is Istio's prefix ``/``."""
    if sm is not None and sm.present is False:  # a request always has a path
        return ("uri absent", lambda req: False, lambda req: req.path), None
    if sm is None or (
        sm.exact is None and sm.prefix is None and sm.suffix is None and sm.regex is None
    ):
        return None, 1
    ci = ignore_case or sm.ignore_case
    desc = (
        "uri "
        + describe_string_match(sm)
        + (" (ignore case)" if ignore_case and not sm.ignore_case and sm.regex is None else "")
    )

    def show(req: Request) -> str:
        return req.path

    check: Check | None
    if sm.exact is not None:
        v = sm.exact
        if ci:
            v = v.lower()
            check = lambda req: req.path.lower() == v  # noqa: E731
        else:
            check = lambda req: req.path == v  # noqa: E731
        return (desc, check, show), None
    if sm.prefix is not None:
        p = sm.prefix
        n = len(p)
        # The codec hands us origin-form paths, which all start with "/".
        if p in ("", "/"):
            return None, n
        if ci:
            p = p.lower()
            check = lambda req: req.path[:n].lower() == p  # noqa: E731
        else:
            check = lambda req: req.path.startswith(p)  # noqa: E731
        return (desc, check, show), n
    pred = compile_string_match(sm, ci)
    assert pred is not None
    return (desc, lambda req: pred(req.path), show), None


def _attr_condition(what: str, attr: str, sm: StringMatch) -> Condition | None:
    def show(req: Request) -> Any:
        return getattr(req, attr)

    if sm.present is False:
        # the method/scheme/authority of a request is always present
        return (f"{what} absent", lambda req: False, show)
    pred = compile_string_match(sm)
    if pred is None:
        return None
    desc = f"{what} {describe_string_match(sm)}"
    if sm.exact is not None and not sm.ignore_case:
        v = sm.exact
        if attr == "method":
            return (desc, lambda req: req.method == v, show)
        if attr == "scheme":
            return (desc, lambda req: req.scheme == v, show)
        return (desc, lambda req: req.authority == v, show)
    if attr == "method":
        return (desc, lambda req: pred(req.method), show)
    if attr == "scheme":
        return (desc, lambda req: pred(req.scheme), show)
    return (desc, lambda req: pred(req.authority), show)


_PSEUDO: dict[str, Callable[[Request], str]] = {
    ":authority": lambda req: req.authority,
    ":method": lambda req: req.method,
    ":scheme": lambda req: req.scheme,
    ":path": lambda req: req.target,
}


def _header_condition(name: str, sm: StringMatch, invert: bool) -> Condition:
    """``headers`` (invert False) or ``without_headers`` (invert True) entry."""
    name = name.lower()
    label = ("without header" if invert else "header") + f" {name!r} {describe_string_match(sm)}"
    pseudo = _PSEUDO.get(name)
    if pseudo is not None:
        get: Callable[[Request], str | None] = pseudo
    else:

        def get(req: Request) -> str | None:
            return req.headers.get(name)

    pred = compile_string_match(sm)
    if sm.present is False or pred is None:
        want_present = sm.present is not False
        if invert:
            want_present = not want_present
        if pseudo is not None:
            check: Check = (lambda req: True) if want_present else (lambda req: False)
        elif want_present:
            check = lambda req: name in req.headers  # noqa: E731
        else:
            check = lambda req: name not in req.headers  # noqa: E731
        return (label, check, get)
    exact = sm.exact if sm.exact is not None and not sm.ignore_case else None
    if pseudo is None:
        if invert:  # a missing header counts as "" (Istio sets treat_missing_header_as_empty)
            if exact is not None:
                check = lambda req: req.headers.get(name, "") != exact  # noqa: E731
            else:
                check = lambda req: not pred(req.headers.get(name, ""))  # noqa: E731
        elif exact is not None:
            check = lambda req: req.headers.get(name) == exact  # noqa: E731
        else:

            def check(req: Request) -> bool:
                v = req.headers.get(name)
                return v is not None and pred(v)

        return (label, check, get)
    if invert:
        check = lambda req: not pred(pseudo(req))  # noqa: E731
    else:
        check = lambda req: pred(pseudo(req))  # noqa: E731
    return (label, check, get)


def _query_condition(name: str, sm: StringMatch) -> Condition:
    label = f"query parameter {name!r} {describe_string_match(sm)}"

    def get(req: Request) -> str | None:
        return req.query_params.get(name)

    pred = compile_string_match(sm)
    if sm.present is False:
        return (label, lambda req: name not in req.query_params, get)
    if pred is None:  # Istio: an empty match means "present"
        return (label, lambda req: name in req.query_params, get)
    if sm.exact is not None and not sm.ignore_case:
        v = sm.exact
        return (label, lambda req: req.query_params.get(name) == v, get)

    def check(req: Request) -> bool:
        v = req.query_params.get(name)
        return v is not None and pred(v)

    return (label, check, get)


def _compile_match(m: RouteMatch) -> tuple[list[Condition], int | None]:
    """Conditions, cheapest first (all are ANDed, so order changes only the cost), and the
    matched-prefix length for rewrites."""
    conds: list[Condition] = []
    if m.port is not None:
        port = m.port
        conds.append((f"port {port}", lambda req: req.dest_port == port, lambda req: req.dest_port))
    for what, attr, sm in (
        ("method", "method", m.method),
        ("scheme", "scheme", m.scheme),
        ("authority", "authority", m.authority),
    ):
        if sm is not None:
            c = _attr_condition(what, attr, sm)
            if c is not None:
                conds.append(c)
    uri, prefix_len = _uri_condition(m.uri, m.ignore_uri_case)
    if uri is not None:
        conds.append(uri)
    for name, sm in m.headers.items():
        conds.append(_header_condition(name, sm, False))
    for name, sm in m.without_headers.items():
        conds.append(_header_condition(name, sm, True))
    for name, sm in m.query_params.items():  # last: it parses the query string
        conds.append(_query_condition(name, sm))
    return conds, prefix_len


def _source_drop_reason(m: RouteMatch, labels: dict[str, str], namespace: str) -> str | None:
    for k, v in m.source_labels.items():
        if labels.get(k) != v:
            return (
                f"dropped: source_labels {dict(m.source_labels)} do not select this proxy "
                f"({k}={labels.get(k)!r})"
            )
    if m.source_namespace is not None and m.source_namespace != namespace:
        return (
            f"dropped: source_namespace {m.source_namespace!r} is not this proxy's "
            f"namespace {namespace!r}"
        )
    return None


# --------------------------------------------------------------------------- actions


class CompiledCluster:
    """One weighted destination: ``cluster`` (name), ``weight``, and its own header edits
    (apply them with :func:`~pilotfish.proxy.filters.apply_request_ops` /
    :func:`~pilotfish.proxy.filters.apply_response_ops` after the route's)."""

    __slots__ = ("cluster", "weight", "request_ops", "response_ops")

    def __init__(
        self,
        cluster: str,
        weight: int,
        request_ops: CompiledHeaderOps | None = None,
        response_ops: CompiledHeaderOps | None = None,
    ) -> None:
        self.cluster = cluster
        self.weight = weight
        self.request_ops = request_ops
        self.response_ops = response_ops

    def __repr__(self) -> str:
        return f"CompiledCluster({self.cluster!r}, weight={self.weight})"


def _make_picker(clusters: list[CompiledCluster]) -> Callable[..., CompiledCluster]:
    live = [c for c in clusters if c.weight > 0]  # Istio drops 0-weight destinations
    if len(live) == 1:
        only = live[0]
        return lambda r=0.0: only
    total = float(sum(c.weight for c in live))
    if len(live) == 2:
        a, b = live
        cut = a.weight / total
        return lambda r: a if r < cut else b
    cum = tuple(w / total for w in accumulate(c.weight for c in live))
    picks = tuple(live)
    last = len(picks) - 1

    def pick(r: float) -> CompiledCluster:
        i = bisect_right(cum, r)
        return picks[i] if i < last else picks[last]

    return pick


def _noop_rewrite(req: Request, match_info: Any = None) -> None:
    return None


def _make_rewrite(
    uri: str | None,
    uri_regex: tuple[str, str] | None,
    authority: str | None,
    prefix_len: int | None,
    where: str,
) -> Callable[..., None] | None:
    path_fn: Callable[[str], str] | None = None
    if uri_regex is not None:
        pattern, substitution = uri_regex
        try:
            rx = compile_regex(pattern)
        except ValueError as e:
            raise RouteConfigError(f"{where}: rewrite.uri_regex: {e}") from None
        try:
            rx.sub(substitution, "")  # surfaces a bad group reference now, not per request
        except Exception as e:
            raise RouteConfigError(f"{where}: rewrite.uri_regex substitution: {e}") from None
        sub = rx.sub
        path_fn = lambda path: sub(substitution, path)  # noqa: E731
    elif uri is not None and uri != "":
        if prefix_len is None:
            path_fn = lambda path: uri  # noqa: E731
        else:
            n = prefix_len
            path_fn = lambda path: uri + path[n:]  # noqa: E731
    if path_fn is None and authority is None:
        return None
    if authority is None:
        f = path_fn

        def rewrite_path(req: Request, match_info: Any = None) -> None:
            req.path = f(req.path)  # the query string stays as it is

        return rewrite_path
    if path_fn is None:

        def rewrite_authority(req: Request, match_info: Any = None) -> None:
            req.set_authority(authority)

        return rewrite_authority
    f = path_fn

    def rewrite_both(req: Request, match_info: Any = None) -> None:
        req.path = f(req.path)
        req.set_authority(authority)

    return rewrite_both


def _make_redirect(rd: Redirect) -> Callable[[Request], LocalReply]:
    """Istio's HTTPRedirect as Envoy builds the Location: ``uri`` replaces the path (the
    request's query string is kept unless ``uri`` has its own), ``authority`` the host,
    ``port`` the port (left out when it is the scheme's default), ``scheme`` the scheme; when
    the scheme changes, the request's port is dropped if it was the old scheme's default."""
    code = rd.response_code
    uri = rd.uri or None
    if uri is not None and not uri.startswith("/"):
        uri = "/" + uri
    uri_has_query = uri is not None and "?" in uri
    fixed_host = rd.authority or None
    fixed_scheme = rd.scheme or None
    port = rd.port

    def location(req: Request) -> str:
        scheme = fixed_scheme or req.scheme
        if fixed_host is not None:
            host = fixed_host
        else:
            host = req.authority
            if port is None and scheme != req.scheme:
                h, p = split_host_port(host)
                if (req.scheme == "http" and p == "80") or (req.scheme == "https" and p == "443"):
                    host = h
        if port is not None:
            host = split_host_port(host)[0]
            if not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
                host = f"{host}:{port}"
        if uri is None:
            path = req.target
        elif uri_has_query or not req.query:
            path = uri
        else:
            path = f"{uri}?{req.query}"
        return f"{scheme}://{host}{path}"

    def reply(req: Request) -> LocalReply:
        return LocalReply(code, b"", [("location", location(req))], details="redirect")

    return reply


def _make_direct(dr: DirectResponse) -> Callable[[], LocalReply]:
    status = dr.status
    body = dr.body.encode() if dr.body else b""
    ctype = ("content-type", "text/plain")

    if body:
        return lambda: LocalReply(status, body, [ctype], details="direct_response")
    return lambda: LocalReply(status, b"", None, details="direct_response")


# --------------------------------------------------------------------------- compiled route


class CompiledRoute:
    """A route ready for the request path.

    * ``route``: the model :class:`~pilotfish.proxy.model.Route`; ``name``, ``origin``;
      ``index`` (position in its virtual host), ``virtual_host`` and ``table`` names.
    * ``kind``: ``"route"``, ``"redirect"`` or ``"direct"``.
    * ``filters``: fault, cors, header edits, in that order, only those configured
      (``()`` otherwise); ``request_filters`` / ``response_filters``: the subsets whose
      ``on_request`` / ``on_response`` have something to do.
    * ``timeout`` (seconds or None), ``retries`` (RetryPolicy or None).
    * ``clusters``: the weighted destinations; ``single``: the destination when there is only
      one (no random number needed); ``pick(r)``: the destination for a uniform ``r`` in
      [0, 1).
    * ``mirrors``: ``((cluster, fraction), ...)``, fraction = percentage / 100.
    * ``rewrite(req)``: applies the rewrite (a no-op when ``has_rewrite`` is False).
    * ``redirect_reply(req)``, ``direct_reply()``: the local replies of those kinds.
    """

    __slots__ = (
        "route",
        "kind",
        "name",
        "origin",
        "index",
        "virtual_host",
        "table",
        "filters",
        "request_filters",
        "response_filters",
        "timeout",
        "retries",
        "clusters",
        "single",
        "pick",
        "mirrors",
        "rewrite",
        "has_rewrite",
        "_redirect",
        "_direct",
        "_conditions",
    )

    def __init__(
        self,
        route: Route,
        index: int,
        virtual_host: str,
        table: str,
        rand: Callable[[], float],
    ) -> None:
        self.route = route
        self.name = route.name
        self.origin = route.origin
        self.index = index
        self.virtual_host = virtual_host
        self.table = table
        where = f"route table {table!r}, virtual host {virtual_host!r}, {self.display_name}"
        try:
            conds, prefix_len = _compile_match(route.match)
        except ValueError as e:
            raise RouteConfigError(f"{where}: match: {e}") from None
        self._conditions = conds
        filters: list[Any] = []
        if route.fault is not None:
            ff = FaultFilter(route.fault, rand)
            if ff.active:
                filters.append(ff)
        if route.cors is not None:
            try:
                filters.append(CorsFilter(route.cors))
            except ValueError as e:
                raise RouteConfigError(f"{where}: cors: {e}") from None
        hf = HeaderOpsFilter.build(route.request_headers, route.response_headers)
        if hf is not None:
            filters.append(hf)
        self.filters = tuple(filters)
        self.request_filters = tuple(
            f for f in filters if not (isinstance(f, HeaderOpsFilter) and f.request is None)
        )
        # the response side runs in reverse order, as Envoy's encoder filters do
        self.response_filters = tuple(
            f
            for f in reversed(filters)
            if isinstance(f, CorsFilter)
            or (isinstance(f, HeaderOpsFilter) and f.response is not None)
        )
        self.timeout: float | None = None
        self.retries = None
        self.clusters: tuple[CompiledCluster, ...] = ()
        self.single: CompiledCluster | None = None
        self.pick = _no_pick
        self.mirrors: tuple[tuple[str, float], ...] = ()
        self.rewrite = _noop_rewrite
        self.has_rewrite = False
        self._redirect: Callable[[Request], LocalReply] | None = None
        self._direct: Callable[[], LocalReply] | None = None
        self.kind: Literal["route", "redirect", "direct"]
        action = route.route
        if action is not None:
            self.kind = "route"
            self.timeout = None if action.timeout is None else float(action.timeout)
            self.retries = action.retries
            route_authority = (action.rewrite is not None and action.rewrite.authority) or (
                hf is not None and hf.request is not None and hf.request.authority
            )
            single_dest = len(action.clusters) == 1
            clusters = []
            for wc in action.clusters:
                rq = compile_header_ops(wc.request_headers, True)
                if rq is not None and rq.authority is not None and single_dest and route_authority:
                    # Istio: with one destination, the route's authority rewrite wins
                    rq.authority = None
                    rq = rq if rq else None
                rs = compile_header_ops(wc.response_headers, False)
                clusters.append(CompiledCluster(wc.cluster, wc.weight, rq, rs))
            self.clusters = tuple(clusters)
            self.pick = _make_picker(clusters)
            live = [c for c in clusters if c.weight > 0]
            self.single = live[0] if len(live) == 1 else None
            self.mirrors = tuple(
                (m.cluster, m.percentage / 100.0) for m in action.mirrors if m.percentage > 0
            )
            rw = action.rewrite
            if rw is not None:
                fn = _make_rewrite(rw.uri, rw.uri_regex, rw.authority or None, prefix_len, where)
                if fn is not None:
                    self.rewrite = fn
                    self.has_rewrite = True
        elif route.redirect is not None:
            self.kind = "redirect"
            self._redirect = _make_redirect(route.redirect)
        else:
            assert route.direct_response is not None
            self.kind = "direct"
            self._direct = _make_direct(route.direct_response)

    @property
    def display_name(self) -> str:
        return self.name if self.name else f"routes[{self.index}]"

    def redirect_reply(self, req: Request) -> LocalReply:
        if self._redirect is None:
            raise TypeError(f"{self.display_name} is a {self.kind} route, not a redirect")
        return self._redirect(req)

    def direct_reply(self) -> LocalReply:
        if self._direct is None:
            raise TypeError(f"{self.display_name} is a {self.kind} route, not a direct response")
        return self._direct()

    def describe_match(self) -> list[str]:
        """The route's conditions, in words (empty: matches every request)."""
        return [d for d, _, _ in self._conditions]

    def __repr__(self) -> str:
        return (
            f"CompiledRoute({self.display_name!r}, kind={self.kind!r}, vhost={self.virtual_host!r})"
        )


def _no_pick(r: float = 0.0) -> CompiledCluster:
    raise TypeError("this route has no destinations (redirect or direct response)")


# --------------------------------------------------------------------------- virtual hosts


class _VHost:
    """A compiled virtual host: ``routes`` to try in order as (check, route) pairs, then
    ``fallback`` (the first unconditional route, or None); ``entries`` keeps every model
    route in order -- compiled, or the reason it was dropped -- for traces."""

    __slots__ = ("name", "routes", "fallback", "entries")

    def __init__(
        self,
        name: str,
        routes: tuple[tuple[Check, CompiledRoute], ...],
        fallback: CompiledRoute | None,
        entries: list[tuple[str, CompiledRoute | None, str]],
    ) -> None:
        self.name = name
        self.routes = routes
        self.fallback = fallback
        self.entries = entries


def _compile_vhost(
    vh: VirtualHost,
    table: str,
    labels: dict[str, str],
    namespace: str,
    rand: Callable[[], float],
) -> _VHost:
    routes: list[tuple[Check, CompiledRoute]] = []
    fallback: CompiledRoute | None = None
    entries: list[tuple[str, CompiledRoute | None, str]] = []
    for i, r in enumerate(vh.routes):
        drop = _source_drop_reason(r.match, labels, namespace)
        if drop is not None:
            entries.append((r.name or f"routes[{i}]", None, drop))
            continue
        cr = CompiledRoute(r, i, vh.name, table, rand)
        entries.append((cr.display_name, cr, ""))
        if fallback is not None:
            continue  # unreachable: compiled for traces only
        check = _combine([c for _, c, _ in cr._conditions])
        if check is None:
            fallback = cr
        else:
            routes.append((check, cr))
    return _VHost(vh.name, tuple(routes), fallback, entries)


def _split_domain(domain: str) -> tuple[str, str]:
    """-> (kind, key): ("exact", "a.b"), ("suffix", ".b"), ("prefix", "a."), ("any", "")."""
    d = domain.lower()
    if d == "*":
        return "any", ""
    if d.startswith("*"):
        kind, key = "suffix", d[1:]
    elif d.endswith("*"):
        kind, key = "prefix", d[:-1]
    else:
        kind, key = "exact", d
    if "*" in key or not d:
        raise ValueError(
            f"invalid domain {domain!r}: one wildcard at most, at the start or the end"
        )
    return kind, key


class RouteTable:
    """One compiled :class:`~pilotfish.proxy.model.RouteConfiguration`."""

    __slots__ = (
        "name",
        "config",
        "virtual_hosts",
        "_exact",
        "_suffix",
        "_prefix",
        "_any",
        "_only",
        "_fixed",
        "_cache",
    )

    def __init__(
        self,
        config: RouteConfiguration,
        labels: dict[str, str] | None = None,
        namespace: str = "default",
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.name = config.name
        self.config = config
        labels = labels or {}
        self.virtual_hosts: list[_VHost] = []
        exact: dict[str, _VHost] = {}
        suffix: dict[int, dict[str, _VHost]] = {}
        prefix: dict[int, dict[str, _VHost]] = {}
        any_vh: _VHost | None = None
        seen: dict[str, str] = {}
        for vh in config.virtual_hosts:
            cvh = _compile_vhost(vh, config.name, labels, namespace, rand)
            self.virtual_hosts.append(cvh)
            for domain in vh.domains:
                where = f"route table {config.name!r}, virtual host {vh.name!r}"
                try:
                    kind, key = _split_domain(domain)
                except ValueError as e:
                    raise RouteConfigError(f"{where}: {e}") from None
                low = domain.lower()
                if low in seen:
                    raise RouteConfigError(
                        f"{where}: domain {domain!r} is also in virtual host {seen[low]!r} "
                        "(domains must be unique within a route table)"
                    )
                seen[low] = vh.name
                if kind == "exact":
                    exact[key] = cvh
                elif kind == "suffix":
                    suffix.setdefault(len(key), {})[key] = cvh
                elif kind == "prefix":
                    prefix.setdefault(len(key), {})[key] = cvh
                else:
                    any_vh = cvh
        self._exact = exact
        # longest first; the wildcard must stand for at least one character
        self._suffix = tuple(sorted(suffix.items(), reverse=True))
        self._prefix = tuple(sorted(prefix.items(), reverse=True))
        self._any = any_vh
        self._only = any_vh if len(self.virtual_hosts) == 1 and any_vh is not None else None
        # the commonest table of all: one '*' virtual host whose first route matches anything
        only = self._only
        self._fixed = only.fallback if only is not None and not only.routes else None
        self._cache: dict[str, _VHost | None] = {}

    # ------------------------------------------------------------------ virtual host lookup

    def _lookup(self, host: str) -> tuple[_VHost | None, str]:
        """Exact, then suffix wildcards, then prefix wildcards (no ``*``) on a lowercased host."""
        vh = self._exact.get(host)
        if vh is not None:
            return vh, f"exact domain {host!r}"
        n = len(host)
        for length, table in self._suffix:
            if length < n:
                vh = table.get(host[n - length :])
                if vh is not None:
                    return vh, f"suffix domain '*{host[n - length :]}'"
        for length, table in self._prefix:
            if length < n:
                vh = table.get(host[:length])
                if vh is not None:
                    return vh, f"prefix domain '{host[:length]}*'"
        return None, ""

    def _resolve(self, authority: str) -> tuple[_VHost | None, str]:
        a = authority.lower()
        vh, how = self._lookup(a)
        if vh is None:
            host, port = split_host_port(a)
            if port is not None:
                vh, how = self._lookup(host)
                if vh is not None:
                    how += " (port stripped)"
        if vh is None and self._any is not None:
            vh, how = self._any, "domain '*'"
        return vh, how

    def virtual_host_for(self, authority: str) -> _VHost | None:
        """The virtual host serving ``authority`` (cached), or None."""
        vh = self._only
        if vh is not None:
            return vh
        try:
            return self._cache[authority]
        except KeyError:
            pass
        vh = self._resolve(authority)[0]
        cache = self._cache
        if len(cache) >= _AUTHORITY_CACHE_MAX:
            cache.clear()  # arbitrary Host headers must not grow it without bound
        cache[authority] = vh
        return vh

    # ------------------------------------------------------------------ the hot path

    def match(self, req: Request) -> CompiledRoute | None:
        """The first route of the selected virtual host that matches, or None (the caller
        answers 404 with flag ``NR``)."""
        cr = self._fixed
        if cr is not None:
            return cr
        vh = self._only
        if vh is None:
            vh = self._cache.get(req.authority, _MISS)
            if vh is _MISS:
                vh = self.virtual_host_for(req.authority)
            if vh is None:
                return None
        for check, cr in vh.routes:
            if check(req):
                return cr
        return vh.fallback

    # ------------------------------------------------------------------ explain (slow)

    def explain_virtual_host(self, authority: str) -> tuple[str | None, str]:
        """(virtual host name or None, why) -- not cached, for explain."""
        vh, how = self._resolve(authority)
        if vh is None:
            return None, f"no virtual host has a domain matching authority {authority!r}"
        return vh.name, f"authority {authority!r} matched {how}"

    def match_trace(self, req: Request) -> list[tuple[str, bool, str]]:
        """Every route of the selected virtual host, in order: (name, matched, reason).
        Exactly one row (the winner) has matched=True, if any; routes after it are still
        evaluated and reported as shadowed when they would have matched. Empty when no
        virtual host serves the authority (see :meth:`explain_virtual_host`)."""
        vh = self._resolve(req.authority)[0]
        if vh is None:
            return []
        out: list[tuple[str, bool, str]] = []
        winner: str | None = None
        for name, cr, dropped in vh.entries:
            if cr is None:
                out.append((name, False, dropped))
                continue
            failed = None
            for desc, check, show in cr._conditions:
                if not check(req):
                    failed = f"{desc}: no match for {show(req)!r}"
                    break
            if failed is not None:
                out.append((name, False, failed))
            elif winner is not None:
                out.append((name, False, f"would match, but {winner} matched first"))
            else:
                winner = name
                descs = cr.describe_match()
                out.append(
                    (
                        name,
                        True,
                        "matched: " + ", ".join(descs) if descs else "matched: no conditions",
                    )
                )
        return out


class Router:
    """All route tables of one proxy, compiled. ``labels`` and ``namespace`` are the proxy's
    (its node's): routes whose ``source_labels`` / ``source_namespace`` do not select it are
    dropped. ``rand`` feeds the fault filters (tests pass a scripted one)."""

    __slots__ = ("tables",)

    def __init__(
        self,
        configs: Iterable[RouteConfiguration],
        labels: dict[str, str] | None = None,
        namespace: str = "default",
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.tables: dict[str, RouteTable] = {}
        for rc in configs:
            if rc.name in self.tables:
                raise RouteConfigError(f"route table {rc.name!r} is defined twice")
            self.tables[rc.name] = RouteTable(rc, labels, namespace, rand)

    def table(self, name: str) -> RouteTable | None:
        return self.tables.get(name)
