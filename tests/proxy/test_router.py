"""Router: virtual host selection, match kinds, order, weights, rewrite, redirect, direct."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotfish.proxy.filters import CorsFilter, FaultFilter, HeaderOpsFilter, apply_request_ops
from pilotfish.proxy.http import Request
from pilotfish.proxy.model import RouteConfiguration
from pilotfish.proxy.router import RouteConfigError, Router, RouteTable, split_host_port

# --------------------------------------------------------------------------- helpers

OK = {"clusters": [{"cluster": "c"}]}


def table(vhosts: list[dict[str, Any]], labels=None, namespace="default", rand=None) -> RouteTable:
    rc = msgspec.convert({"name": "t", "virtual_hosts": vhosts}, RouteConfiguration)
    kw = {} if rand is None else {"rand": rand}
    t = Router([rc], labels, namespace, **kw).table("t")
    assert t is not None
    return t


def routes_table(*routes: dict[str, Any], **kw: Any) -> RouteTable:
    return table([{"name": "vh", "domains": ["*"], "routes": list(routes)}], **kw)


def route(name: str, match: dict[str, Any] | None = None, **rest: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"name": name, **rest}
    if match is not None:
        r["match"] = match
    if not ({"route", "redirect", "direct_response"} & r.keys()):
        r["route"] = OK
    return r


def req(target="/", headers=None, method="GET", host="svc", **kw: Any) -> Request:
    h = {"host": host} if host is not None else {}
    h.update(headers or {})
    return Request(method, target, h, **kw)


def name_of(t: RouteTable, r: Request) -> str | None:
    cr = t.match(r)
    return None if cr is None else cr.name


def one(match: dict[str, Any]) -> RouteTable:
    """A table whose only route 'hit' has this match (so None means 'no match')."""
    return routes_table(route("hit", match))


# --------------------------------------------------------------------------- virtual hosts

VHOSTS = [
    {
        "name": "exact",
        "domains": ["www.foo.com", "reviews", "reviews:9080"],
        "routes": [route("exact")],
    },
    {"name": "suffix", "domains": ["*.foo.com"], "routes": [route("suffix")]},
    {"name": "longsuffix", "domains": ["*.api.foo.com"], "routes": [route("longsuffix")]},
    {"name": "prefix", "domains": ["foo.*"], "routes": [route("prefix")]},
    {"name": "longprefix", "domains": ["foo.bar.*"], "routes": [route("longprefix")]},
    {"name": "any", "domains": ["*"], "routes": [route("any")]},
]


@pytest.mark.parametrize(
    "authority, expected",
    [
        ("www.foo.com", "exact"),
        ("WWW.Foo.COM", "exact"),  # case-insensitive
        ("x.foo.com", "suffix"),
        ("x.api.foo.com", "longsuffix"),  # longest suffix first
        ("foo.com", "prefix"),  # '*.foo.com' needs at least one character before '.foo.com'
        ("foo.org", "prefix"),
        ("foo.bar.org", "longprefix"),  # longest prefix first
        ("reviews", "exact"),
        ("reviews:9080", "exact"),
        ("reviews:1234", "exact"),  # port stripped, before falling back to '*'
        ("x.foo.com:8080", "suffix"),
        ("other", "any"),
        ("", "any"),
    ],
)
def test_virtual_host_precedence(authority, expected):
    t = table(VHOSTS)
    assert name_of(t, req(host=authority)) == expected
    # cached answer is the same
    assert name_of(t, req(host=authority)) == expected


def test_exact_beats_wildcards_and_suffix_beats_prefix():
    t = table(
        [
            {"name": "p", "domains": ["api.*"], "routes": [route("p")]},
            {"name": "s", "domains": ["*.example.com"], "routes": [route("s")]},
            {"name": "e", "domains": ["api.example.com"], "routes": [route("e")]},
        ]
    )
    assert name_of(t, req(host="api.example.com")) == "e"
    assert name_of(t, req(host="api.example.org")) == "p"
    assert name_of(t, req(host="web.example.com")) == "s"
    t2 = table(
        [
            {"name": "p", "domains": ["api.*"], "routes": [route("p")]},
            {"name": "s", "domains": ["*.example.com"], "routes": [route("s")]},
        ]
    )
    assert name_of(t2, req(host="api.example.com")) == "s"


def test_no_virtual_host_is_none():
    t = table([{"name": "e", "domains": ["a.com"], "routes": [route("e")]}])
    assert t.match(req(host="b.com")) is None
    assert t.match_trace(req(host="b.com")) == []
    assert t.explain_virtual_host("b.com")[0] is None
    assert t.explain_virtual_host("A.com:80") == (
        "e",
        "authority 'A.com:80' matched exact domain 'a.com' (port stripped)",
    )


def test_ipv6_authority_port_stripped():
    t = table(
        [
            {"name": "v6", "domains": ["[::1]"], "routes": [route("v6")]},
            {"name": "any", "domains": ["*"], "routes": [route("any")]},
        ]
    )
    assert name_of(t, req(host="[::1]:8080")) == "v6"
    assert name_of(t, req(host="[::1]")) == "v6"
    assert split_host_port("[::1]:80") == ("[::1]", "80")
    assert split_host_port("::1") == ("::1", None)
    assert split_host_port("a:80") == ("a", "80")


def test_duplicate_and_invalid_domains_are_rejected():
    with pytest.raises(RouteConfigError, match="also in virtual host 'a'"):
        table(
            [
                {"name": "a", "domains": ["x.com"], "routes": []},
                {"name": "b", "domains": ["X.com"], "routes": []},
            ]
        )
    with pytest.raises(RouteConfigError, match="invalid domain"):
        table([{"name": "a", "domains": ["a.*.com"], "routes": []}])


def test_authority_cache_is_bounded():
    t = table(VHOSTS)
    for i in range(3000):
        assert name_of(t, req(host=f"h{i}.foo.com")) == "suffix"
    assert len(t._cache) <= 1024


@settings(max_examples=200, deadline=None)
@given(
    domains=st.lists(
        st.sampled_from(
            ["a.b.c", "b.c", "*.b.c", "*.c", "*c", "a.*", "a.b.*", "a*", "*", "a.b.c:80", "b.c:80"]
        ),
        unique=True,
    ),
    host=st.sampled_from(["a.b.c", "b.c", "x.b.c", "a.b.x", "a", "c", "a.b.c:80", "b.c:81", "q"]),
)
def test_virtual_host_selection_matches_reference(domains, host):
    vhosts = [{"name": d, "domains": [d], "routes": [route(d)]} for d in domains]
    t = table(vhosts)

    def ref_lookup(h: str) -> str | None:
        if h in domains:
            return h
        sfx = [
            d
            for d in domains
            if d.startswith("*") and d != "*" and len(h) > len(d) - 1 and h.endswith(d[1:])
        ]
        if sfx:
            return max(sfx, key=len)
        pfx = [
            d
            for d in domains
            if d.endswith("*") and d != "*" and len(h) > len(d) - 1 and h.startswith(d[:-1])
        ]
        if pfx:
            return max(pfx, key=len)
        return None

    want = ref_lookup(host)
    if want is None and ":" in host:
        want = ref_lookup(host.rsplit(":", 1)[0])
    if want is None and "*" in domains:
        want = "*"
    assert name_of(t, req(host=host)) == want


# --------------------------------------------------------------------------- route order


def test_first_match_wins_and_unconditional_route_ends_the_list():
    t = routes_table(
        route("a", {"uri": {"prefix": "/a"}}),
        route("ab", {"uri": {"prefix": "/ab"}}),  # shadowed by "a"
        route("all"),
        route("never", {"uri": {"prefix": "/n"}}),
    )
    assert name_of(t, req("/abc")) == "a"
    assert name_of(t, req("/x")) == "all"
    assert name_of(t, req("/n")) == "all"
    vh = t.virtual_hosts[0]
    assert [cr.name for _, cr in vh.routes] == ["a", "ab"]
    assert vh.fallback is not None and vh.fallback.name == "all"


def test_prefix_slash_route_is_unconditional():
    t = routes_table(route("root", {"uri": {"prefix": "/"}}))
    vh = t.virtual_hosts[0]
    assert vh.routes == () and vh.fallback is not None
    assert t._only is vh  # one '*' virtual host: no authority lookup at all
    assert t._fixed is vh.fallback  # ... and no route loop either
    assert name_of(t, req("/anything?x=1", host="whatever")) == "root"


def test_no_route_matches_is_none():
    t = routes_table(route("a", {"uri": {"exact": "/a"}}))
    assert t.match(req("/b")) is None


# --------------------------------------------------------------------------- match kinds


@pytest.mark.parametrize(
    "match, target, expected",
    [
        ({"exact": "/a"}, "/a", True),
        ({"exact": "/a"}, "/a?q=1", True),  # the query string is not part of the path
        ({"exact": "/a"}, "/a/", False),
        ({"exact": "/a"}, "/A", False),
        ({"prefix": "/api"}, "/api/v1", True),
        ({"prefix": "/api"}, "/apix", True),
        ({"prefix": "/api"}, "/ap", False),
        ({"prefix": "/api"}, "/API", False),
        ({"regex": "/r/[0-9]+"}, "/r/12", True),
        ({"regex": "/r/[0-9]+"}, "/r/12x", False),  # full match, as Envoy does
        ({"regex": "/r/[0-9]+"}, "/x/r/12", False),
        ({"regex": "/r/[0-9]+"}, "/r/12?x=y", True),  # query excluded
        ({"suffix": ".png"}, "/img/a.png", True),
        ({"suffix": ".png"}, "/img/a.jpg", False),
        ({}, "/whatever", True),
        ({"present": False}, "/whatever", False),
    ],
)
def test_uri_match(match, target, expected):
    assert (name_of(one({"uri": match}), req(target)) == "hit") is expected


@pytest.mark.parametrize(
    "match, target, expected",
    [
        ({"exact": "/Api"}, "/aPI", True),
        ({"prefix": "/Api"}, "/aPI/x", True),
        ({"prefix": "/Api"}, "/b", False),
        ({"regex": "/api"}, "/API", False),  # ignore_uri_case does not apply to regex (Istio)
    ],
)
def test_ignore_uri_case(match, target, expected):
    t = one({"uri": match, "ignore_uri_case": True})
    assert (name_of(t, req(target)) == "hit") is expected


def test_string_match_ignore_case_on_uri():
    t = one({"uri": {"prefix": "/Api", "ignore_case": True}})
    assert name_of(t, req("/API/x")) == "hit"


@pytest.mark.parametrize(
    "match, headers, expected",
    [
        ({"exact": "jason"}, {"end-user": "jason"}, True),
        ({"exact": "jason"}, {"end-user": "Jason"}, False),
        ({"exact": "jason", "ignore_case": True}, {"end-user": "JASON"}, True),
        ({"exact": "jason"}, {}, False),
        ({"exact": ""}, {"end-user": ""}, True),
        ({"prefix": "ja"}, {"end-user": "jason"}, True),
        ({"prefix": "JA", "ignore_case": True}, {"end-user": "jason"}, True),
        ({"prefix": "x"}, {"end-user": "jason"}, False),
        ({"prefix": "x"}, {}, False),
        ({"suffix": "son"}, {"end-user": "jason"}, True),
        ({"suffix": "SON", "ignore_case": True}, {"end-user": "jason"}, True),
        ({"suffix": "x"}, {"end-user": "jason"}, False),
        ({"regex": "j.*n"}, {"end-user": "jason"}, True),
        ({"regex": "j.*"}, {"end-user": "xjason"}, False),  # full match
        ({"regex": "j.*"}, {}, False),
        ({"present": True}, {"end-user": ""}, True),
        ({"present": True}, {}, False),
        ({"present": False}, {}, True),
        ({"present": False}, {"end-user": "x"}, False),
        ({}, {"end-user": "anything"}, True),  # an empty match means "present"
        ({}, {}, False),
    ],
)
def test_header_match(match, headers, expected):
    t = one({"headers": {"End-User": match}})  # names are case-insensitive (lowercased)
    assert (name_of(t, req(headers=headers)) == "hit") is expected


@pytest.mark.parametrize(
    "match, headers, expected",
    [
        ({"exact": "jason"}, {"end-user": "jason"}, False),
        ({"exact": "jason"}, {"end-user": "other"}, True),
        ({"exact": "jason"}, {}, True),  # absent does not match, so the route does
        ({"exact": ""}, {}, False),  # a missing header counts as "" (as Istio configures Envoy)
        ({"prefix": "ja"}, {"end-user": "jason"}, False),
        ({"prefix": "ja"}, {"end-user": "bob"}, True),
        ({"regex": "j.*"}, {"end-user": "jason"}, False),
        ({"regex": "j.*"}, {}, True),
        ({}, {"end-user": "x"}, False),  # "not present"
        ({}, {}, True),
    ],
)
def test_without_headers(match, headers, expected):
    t = one({"without_headers": {"end-user": match}})
    assert (name_of(t, req(headers=headers)) == "hit") is expected


@pytest.mark.parametrize(
    "match, query, expected",
    [
        ({"exact": "1"}, "v=1", True),
        ({"exact": "1"}, "v=2", False),
        ({"exact": "1"}, "w=1", False),
        ({"exact": "a b"}, "v=a%20b", True),  # values are %-decoded
        ({"exact": "1"}, "v=1&v=2", True),  # first value wins
        ({"prefix": "ab"}, "v=abc", True),
        ({"prefix": "ab"}, "v=xab", False),
        ({"regex": "[0-9]+"}, "v=123", True),
        ({"regex": "[0-9]+"}, "v=123a", False),
        ({}, "v", True),  # empty match: present
        ({}, "v=", True),
        ({}, "w=1", False),
        ({}, "", False),
    ],
)
def test_query_param_match(match, query, expected):
    t = one({"query_params": {"v": match}})
    target = "/p?" + query if query else "/p"
    assert (name_of(t, req(target)) == "hit") is expected


@pytest.mark.parametrize(
    "match, kw, expected",
    [
        ({"method": {"exact": "POST"}}, {"method": "POST"}, True),
        ({"method": {"exact": "POST"}}, {"method": "GET"}, False),
        ({"method": {"regex": "GET|HEAD"}}, {"method": "HEAD"}, True),
        ({"method": {"prefix": "P"}}, {"method": "PUT"}, True),
        ({"scheme": {"exact": "https"}}, {"scheme": "https"}, True),
        ({"scheme": {"exact": "https"}}, {"scheme": "http"}, False),
        ({"authority": {"exact": "svc:80"}}, {"host": "svc:80"}, True),
        ({"authority": {"exact": "svc"}}, {"host": "svc:80"}, False),
        ({"authority": {"prefix": "svc"}}, {"host": "svc:80"}, True),
        ({"authority": {"exact": "SVC", "ignore_case": True}}, {"host": "svc"}, True),
        ({"port": 9080}, {"dest_port": 9080}, True),
        ({"port": 9080}, {"dest_port": 80}, False),
    ],
)
def test_method_scheme_authority_port(match, kw, expected):
    t = one(match)
    assert (name_of(t, req(**kw)) == "hit") is expected


def test_pseudo_header_names_use_the_request_fields():
    t = one({"headers": {":method": {"exact": "PUT"}, ":authority": {"suffix": ".com"}}})
    assert name_of(t, req(method="PUT", host="a.com")) == "hit"
    assert name_of(t, req(method="GET", host="a.com")) is None
    t = one({"headers": {":path": {"regex": "/a\\?x=1"}}})
    assert name_of(t, req("/a?x=1")) == "hit"


def test_all_conditions_are_anded():
    t = one(
        {
            "uri": {"prefix": "/api"},
            "method": {"exact": "GET"},
            "headers": {"x-a": {"exact": "1"}},
            "without_headers": {"x-b": {}},
            "query_params": {"q": {"exact": "z"}},
            "port": 80,
        }
    )
    good = dict(target="/api/x?q=z", headers={"x-a": "1"}, dest_port=80)
    assert name_of(t, req(**good)) == "hit"
    for bad in (
        dict(good, target="/x?q=z"),
        dict(good, target="/api/x?q=y"),
        dict(good, headers={}),
        dict(good, headers={"x-a": "1", "x-b": "1"}),
        dict(good, dest_port=81),
        dict(good, method="POST"),
    ):
        assert name_of(t, req(**bad)) is None, bad


def test_invalid_regex_names_the_route():
    with pytest.raises(
        RouteConfigError, match="route table 't', virtual host 'vh', bad.*invalid regex"
    ):
        routes_table(route("bad", {"headers": {"x": {"regex": "(unclosed"}}}))


# --------------------------------------------------------------------------- source selection


def test_source_labels_and_namespace_drop_routes_at_compile_time():
    t = routes_table(
        route("v2-only", {"source_labels": {"app": "reviews", "version": "v2"}}),
        route("ns-other", {"source_namespace": "other"}),
        route("mine", {"source_labels": {"app": "reviews"}, "source_namespace": "prod"}),
        labels={"app": "reviews", "version": "v1"},
        namespace="prod",
    )
    assert name_of(t, req()) == "mine"
    trace = t.match_trace(req())
    assert [(n, m) for n, m, _ in trace] == [
        ("v2-only", False),
        ("ns-other", False),
        ("mine", True),
    ]
    assert "source_labels" in trace[0][2] and "version='v1'" in trace[0][2]
    assert "source_namespace 'other'" in trace[1][2]


def test_source_labels_match_keeps_route():
    t = routes_table(
        route("v2-only", {"source_labels": {"version": "v2"}}),
        route("rest"),
        labels={"version": "v2", "app": "x"},
    )
    assert name_of(t, req()) == "v2-only"


# --------------------------------------------------------------------------- trace


def test_match_trace_reports_reasons_and_shadowing():
    t = routes_table(
        route("a", {"uri": {"prefix": "/a"}}),
        route("h", {"headers": {"x-user": {"exact": "jason"}}}),
        route("all"),
    )
    trace = t.match_trace(req("/b", {"x-user": "jason"}))
    assert trace[0] == ("a", False, "uri prefix '/a': no match for '/b'")
    assert trace[1] == ("h", True, "matched: header 'x-user' exact 'jason'")
    assert trace[2] == ("all", False, "would match, but h matched first")
    cr = t.match(req("/b", {"x-user": "jason"}))
    assert cr is not None and (cr.index, cr.virtual_host, cr.table) == (1, "vh", "t")


def test_unnamed_routes_get_an_index_name():
    t = routes_table({"route": OK}, {"route": OK})
    trace = t.match_trace(req())
    assert [n for n, _, _ in trace] == ["routes[0]", "routes[1]"]


# --------------------------------------------------------------------------- destinations


def test_single_cluster_needs_no_random_number():
    cr = routes_table(route("r")).match(req())
    assert cr is not None and cr.kind == "route"
    assert cr.single is not None and cr.single.cluster == "c"
    assert cr.pick() is cr.single and cr.pick(0.99) is cr.single


def test_weights_two_clusters():
    cr = routes_table(
        route(
            "r",
            route={"clusters": [{"cluster": "v1", "weight": 75}, {"cluster": "v2", "weight": 25}]},
        )
    ).match(req())
    assert cr is not None and cr.single is None
    assert cr.pick(0.0).cluster == "v1"
    assert cr.pick(0.7499).cluster == "v1"
    assert cr.pick(0.75).cluster == "v2"
    assert cr.pick(0.9999999).cluster == "v2"


def test_weights_distribution_is_exact_over_a_grid():
    cr = routes_table(
        route(
            "r",
            route={
                "clusters": [
                    {"cluster": "a", "weight": 10},
                    {"cluster": "zero", "weight": 0},
                    {"cluster": "b", "weight": 30},
                    {"cluster": "c", "weight": 60},
                ]
            },
        )
    ).match(req())
    assert cr is not None
    counts: dict[str, int] = {}
    n = 1000
    for i in range(n):
        c = cr.pick((i + 0.5) / n).cluster
        counts[c] = counts.get(c, 0) + 1
    assert counts == {"a": 100, "b": 300, "c": 600}
    assert cr.pick(1.0 - 1e-17).cluster == "c"  # rounding at the top end stays in range
    assert [c.cluster for c in cr.clusters] == ["a", "zero", "b", "c"]


def test_zero_weight_alongside_one_live_cluster_is_single():
    cr = routes_table(
        route(
            "r", route={"clusters": [{"cluster": "a", "weight": 0}, {"cluster": "b", "weight": 5}]}
        )
    ).match(req())
    assert cr is not None and cr.single is not None and cr.single.cluster == "b"


def test_timeout_retries_mirrors():
    cr = routes_table(
        route(
            "r",
            route={
                "clusters": [{"cluster": "c"}],
                "timeout": "1.5s",
                "retries": {"attempts": 3, "retry_on": ["5xx"]},
                "mirrors": [
                    {"cluster": "m1"},
                    {"cluster": "m2", "percentage": 12.5},
                    {"cluster": "m3", "percentage": 0},
                ],
            },
        )
    ).match(req())
    assert cr is not None
    assert cr.timeout == 1.5
    assert cr.retries is not None and cr.retries.attempts == 3
    assert cr.mirrors == (("m1", 1.0), ("m2", 0.125))
    plain = routes_table(route("p")).match(req())
    assert (
        plain is not None
        and plain.timeout is None
        and plain.retries is None
        and plain.mirrors == ()
    )


def test_per_destination_header_ops_and_authority_precedence():
    cr = routes_table(
        route(
            "r",
            route={
                "clusters": [
                    {
                        "cluster": "a",
                        "weight": 50,
                        "request_headers": {"set": {"x-dest": "a", "host": "a.internal"}},
                        "response_headers": {"add": {"x-from": "a"}},
                    },
                    {"cluster": "b", "weight": 50},
                ]
            },
        )
    ).match(req())
    assert cr is not None
    a = cr.pick(0.1)
    assert a.cluster == "a" and a.request_ops is not None and a.response_ops is not None
    r = req(host="orig")
    apply_request_ops(a.request_ops, r.headers, r)
    assert r.headers["x-dest"] == "a" and r.authority == "a.internal"
    assert cr.pick(0.9).request_ops is None
    # single destination: the route's authority rewrite wins over the destination's
    cr = routes_table(
        route(
            "r",
            route={
                "clusters": [{"cluster": "a", "request_headers": {"set": {"host": "dest"}}}],
                "rewrite": {"authority": "route"},
            },
        )
    ).match(req())
    assert cr is not None and cr.single is not None and cr.single.request_ops is None


# --------------------------------------------------------------------------- rewrite


def rewritten(
    match: dict[str, Any] | None, rewrite: dict[str, Any], target: str, host="svc"
) -> tuple[str, str]:
    t = routes_table(route("r", match, route={"clusters": [{"cluster": "c"}], "rewrite": rewrite}))
    r = req(target, host=host)
    cr = t.match(r)
    assert cr is not None and cr.has_rewrite
    cr.rewrite(r, None)
    return r.target, r.authority


@pytest.mark.parametrize(
    "match, rewrite, target, expected",
    [
        ({"uri": {"prefix": "/api/"}}, {"uri": "/"}, "/api/v1?x=1", "/v1?x=1"),
        ({"uri": {"prefix": "/old"}}, {"uri": "/new"}, "/old/a", "/new/a"),
        ({"uri": {"prefix": "/OLD"}, "ignore_uri_case": True}, {"uri": "/new"}, "/old/a", "/new/a"),
        ({"uri": {"exact": "/a"}}, {"uri": "/b/c"}, "/a?q=2", "/b/c?q=2"),
        ({"uri": {"regex": "/r/[0-9]+"}}, {"uri": "/items"}, "/r/42?z", "/items?z"),
        (None, {"uri": "/v2"}, "/foo", "/v2foo"),  # no uri match is prefix "/" in Istio
        ({"uri": {"prefix": "/"}}, {"uri": "/x/"}, "/foo", "/x/foo"),
        (None, {"uri_regex": ["^/svc/([^/]+)/(.*)$", r"/\2/\1"]}, "/svc/a/b/c?k=v", "/b/c/a?k=v"),
        (None, {"uri_regex": ["o", "0"]}, "/foo/boo", "/f00/b00"),  # every match, like Envoy
    ],
)
def test_rewrite_uri(match, rewrite, target, expected):
    assert rewritten(match, rewrite, target)[0] == expected


def test_rewrite_authority_and_uri_together():
    assert rewritten({"uri": {"prefix": "/a"}}, {"uri": "/b", "authority": "new:81"}, "/a/x") == (
        "/b/x",
        "new:81",
    )
    assert rewritten(None, {"authority": "new"}, "/p?q") == ("/p?q", "new")


def test_rewrite_query_params_cache_still_valid():
    t = routes_table(
        route("r", None, route={"clusters": [{"cluster": "c"}], "rewrite": {"uri": "/z"}})
    )
    r = req("/a?k=v")
    assert r.query_params == {"k": "v"}
    cr = t.match(r)
    assert cr is not None
    cr.rewrite(r)
    assert r.target == "/za?k=v" and r.query_params == {"k": "v"}


def test_no_rewrite_is_a_noop():
    cr = routes_table(route("r")).match(req())
    assert cr is not None and not cr.has_rewrite
    r = req("/a?b", host="h")
    cr.rewrite(r, None)
    assert (r.target, r.authority) == ("/a?b", "h")


def test_invalid_rewrite_regex_is_rejected():
    with pytest.raises(RouteConfigError, match="rewrite.uri_regex"):
        routes_table(
            route(
                "r",
                None,
                route={"clusters": [{"cluster": "c"}], "rewrite": {"uri_regex": ["(", "x"]}},
            )
        )


# --------------------------------------------------------------------------- redirect, direct


def redirect(rd: dict[str, Any], target="/old?x=1", host="svc", scheme="http") -> tuple[int, str]:
    t = routes_table(route("r", None, redirect=rd))
    r = req(target, host=host, scheme=scheme)
    cr = t.match(r)
    assert cr is not None and cr.kind == "redirect"
    reply = cr.redirect_reply(r)
    assert reply.body == b"" and reply.flag is None
    ((name, value),) = reply.headers
    assert name == "location"
    return reply.status, value


@pytest.mark.parametrize(
    "rd, kw, expected",
    [
        ({"uri": "/new"}, {}, (301, "http://svc/new?x=1")),  # the query is kept
        ({"uri": "/new?y=2"}, {}, (301, "http://svc/new?y=2")),  # unless uri has its own
        ({"uri": "new"}, {"target": "/o"}, (301, "http://svc/new")),
        ({"authority": "other.com"}, {}, (301, "http://other.com/old?x=1")),
        ({"authority": "other.com", "response_code": 302}, {}, (302, "http://other.com/old?x=1")),
        ({"scheme": "https"}, {"host": "svc:80"}, (301, "https://svc/old?x=1")),  # :80 dropped
        ({"scheme": "https"}, {"host": "svc:8080"}, (301, "https://svc:8080/old?x=1")),
        ({"port": 8443, "scheme": "https"}, {"host": "svc:80"}, (301, "https://svc:8443/old?x=1")),
        ({"port": 443, "scheme": "https"}, {"host": "svc:80"}, (301, "https://svc/old?x=1")),
        ({"port": 80}, {"host": "svc:9000"}, (301, "http://svc/old?x=1")),
        ({"port": 9000, "authority": "a.com:1"}, {}, (301, "http://a.com:9000/old?x=1")),
        (
            {"uri": "/n", "response_code": 308},
            {"scheme": "https", "host": "h"},
            (308, "https://h/n?x=1"),
        ),
        ({"response_code": 307}, {"target": "/p"}, (307, "http://svc/p")),
    ],
)
def test_redirect_location(rd, kw, expected):
    assert redirect(rd, **kw) == expected


def test_direct_response():
    t = routes_table(
        route("a", {"uri": {"prefix": "/a"}}, direct_response={"status": 503, "body": "down"}),
        route("b", None, direct_response={"status": 204}),
    )
    cr = t.match(req("/a"))
    assert cr is not None and cr.kind == "direct"
    rep = cr.direct_reply()
    assert (rep.status, rep.body, rep.headers) == (503, b"down", [("content-type", "text/plain")])
    assert cr.direct_reply() is not rep  # a fresh reply each time: the pipeline may add headers
    cr = t.match(req("/b"))
    assert cr is not None
    rep = cr.direct_reply()
    assert (rep.status, rep.body, rep.headers) == (204, b"", [])
    with pytest.raises(TypeError):
        cr.redirect_reply(req())
    with pytest.raises(TypeError):
        cr.pick(0.5)


# --------------------------------------------------------------------------- filters on routes


def test_route_filters_in_fixed_order_and_only_when_configured():
    t = routes_table(
        route(
            "all",
            {"uri": {"prefix": "/all"}},
            fault={"abort": {"http_status": 503}},
            cors={"allow_origins": [{"exact": "*"}]},
            request_headers={"set": {"x": "1"}},
        ),
        route("resp", {"uri": {"prefix": "/resp"}}, response_headers={"remove": ["server"]}),
        route(
            "zero",
            {"uri": {"prefix": "/zero"}},
            fault={"abort": {"http_status": 503, "percentage": 0}},
        ),
        route("none"),
    )
    cr = t.match(req("/all"))
    assert cr is not None
    assert [type(f) for f in cr.filters] == [FaultFilter, CorsFilter, HeaderOpsFilter]
    assert [type(f) for f in cr.request_filters] == [FaultFilter, CorsFilter, HeaderOpsFilter]
    assert [type(f) for f in cr.response_filters] == [CorsFilter]
    cr = t.match(req("/resp"))
    assert cr is not None
    assert [type(f) for f in cr.filters] == [HeaderOpsFilter]
    assert cr.request_filters == () and len(cr.response_filters) == 1
    cr = t.match(req("/zero"))
    assert cr is not None and cr.filters == ()
    cr = t.match(req("/x"))
    assert (
        cr is not None
        and cr.filters == ()
        and cr.request_filters == ()
        and cr.response_filters == ()
    )


def test_fault_filter_gets_the_routers_rand():
    draws = iter([0.3, 0.9])
    t = routes_table(
        route("f", fault={"abort": {"http_status": 418, "percentage": 50}}),
        rand=lambda: next(draws),
    )
    cr = t.match(req())
    assert cr is not None
    (ff,) = cr.filters
    first = ff.on_request(req())
    assert first is not None and first.status == 418
    assert ff.on_request(req()) is None


def test_router_tables_and_duplicates():
    rc = msgspec.convert({"name": "80"}, RouteConfiguration)
    r = Router([rc])
    assert r.table("80") is not None and r.table("81") is None
    assert r.table("80").match(req()) is None
    with pytest.raises(RouteConfigError, match="defined twice"):
        Router([rc, rc])
