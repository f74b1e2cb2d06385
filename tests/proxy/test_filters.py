"""Filters: fault injection, CORS, header edits, and the shared string matchers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import pytest

from pilotfish.proxy.filters import (
    CorsFilter,
    Delay,
    FaultFilter,
    HeaderOpsFilter,
    apply_request_ops,
    apply_response_ops,
    compile_header_ops,
    compile_string_match,
    describe_string_match,
)
from pilotfish.proxy.http import FI, LocalReply, Request
from pilotfish.proxy.model import CorsPolicy, Fault, HeaderOps, StringMatch


def req(method="GET", target="/", headers: dict[str, str] | None = None) -> Request:
    return Request(method, target, {"host": "svc", **(headers or {})})


class Rand:
    """A scripted random source that records how many numbers were drawn."""

    def __init__(self, values: Iterable[float]) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self) -> float:
        v = self.values[self.calls]
        self.calls += 1
        return v


def fault(data: dict[str, Any], rand: Rand | None = None) -> FaultFilter:
    f = msgspec.convert(data, Fault)
    return FaultFilter(f, rand) if rand is not None else FaultFilter(f)


def cors(**data: Any) -> CorsFilter:
    return CorsFilter(msgspec.convert(data, CorsPolicy))


# --------------------------------------------------------------------------- fault


def test_abort_always_without_drawing():
    rand = Rand([])
    f = fault({"abort": {"http_status": 503}}, rand)
    out = f.on_request(req())
    assert isinstance(out, LocalReply)
    assert (out.status, out.body, out.flag) == (503, b"fault filter abort", FI)
    assert out.details == "fault_filter_abort"
    assert ("content-type", "text/plain") in out.headers
    assert rand.calls == 0


@pytest.mark.parametrize("r, aborted", [(0.0, True), (0.249, True), (0.25, False), (0.99, False)])
def test_abort_percentage(r, aborted):
    f = fault({"abort": {"http_status": 500, "percentage": 25}}, Rand([r]))
    out = f.on_request(req())
    assert (isinstance(out, LocalReply) and out.status == 500) if aborted else out is None


def test_delay_always_returns_a_delay():
    rand = Rand([])
    f = fault({"delay": {"fixed_delay": "250ms"}}, rand)
    out = f.on_request(req())
    assert isinstance(out, Delay) and out.seconds == 0.25 and out.then is None
    assert rand.calls == 0


@pytest.mark.parametrize("r, delayed", [(0.0999, True), (0.1, False)])
def test_delay_percentage(r, delayed):
    f = fault({"delay": {"fixed_delay": 2, "percentage": 10}}, Rand([r]))
    out = f.on_request(req())
    assert isinstance(out, Delay) if delayed else out is None


def test_delay_then_abort_and_draw_order():
    # delay drawn first, then abort
    f = fault(
        {
            "delay": {"fixed_delay": 1, "percentage": 50},
            "abort": {"http_status": 429, "percentage": 50},
        },
        Rand([0.1, 0.1, 0.1, 0.9, 0.9, 0.1, 0.9, 0.9]),
    )
    both = f.on_request(req())
    assert isinstance(both, Delay) and both.seconds == 1.0
    assert isinstance(both.then, LocalReply) and both.then.status == 429 and both.then.flag == FI
    only_delay = f.on_request(req())
    assert isinstance(only_delay, Delay) and only_delay.then is None
    only_abort = f.on_request(req())
    assert isinstance(only_abort, LocalReply) and only_abort.status == 429
    assert f.on_request(req()) is None


def test_zero_percentages_make_the_filter_inactive():
    f = fault(
        {
            "delay": {"fixed_delay": 1, "percentage": 0},
            "abort": {"http_status": 500, "percentage": 0},
        }
    )
    assert not f.active
    assert f.on_request(req()) is None
    assert fault({"abort": {"http_status": 500, "percentage": 0.001}}).active


def test_fault_abort_replies_are_fresh():
    f = fault({"abort": {"http_status": 503}})
    a, b = f.on_request(req()), f.on_request(req())
    assert a is not b and a.headers is not b.headers  # type: ignore[union-attr]


def test_fault_on_response_does_nothing():
    headers = [("a", "1")]
    fault({"abort": {"http_status": 503}}).on_response(req(), 200, headers)
    assert headers == [("a", "1")]


# --------------------------------------------------------------------------- CORS

POLICY = dict(
    allow_origins=[
        {"exact": "https://a.com"},
        {"prefix": "https://app."},
        {"regex": r"https://.*\.b\.com"},
    ],
    allow_methods=["GET", "POST"],
    allow_headers=["x-a", "x-b"],
    expose_headers=["x-c"],
    max_age="24h",
    allow_credentials=True,
)


def preflight(origin: str | None = "https://a.com", acrm: str | None = "POST") -> Request:
    h = {}
    if origin is not None:
        h["origin"] = origin
    if acrm is not None:
        h["access-control-request-method"] = acrm
    return req("OPTIONS", "/x", h)


@pytest.mark.parametrize("origin", ["https://a.com", "https://app.example", "https://x.b.com"])
def test_preflight_allowed_is_answered(origin):
    out = cors(**POLICY).on_request(preflight(origin))
    assert isinstance(out, LocalReply) and out.status == 200 and out.body == b""
    assert dict(out.headers) == {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "GET,POST",
        "access-control-allow-headers": "x-a,x-b",
        "access-control-max-age": "86400",
        "access-control-allow-credentials": "true",
    }


def test_preflight_with_minimal_policy_sends_only_the_origin():
    out = cors(allow_origins=[{"exact": "https://a.com"}]).on_request(preflight())
    assert isinstance(out, LocalReply)
    assert out.headers == [("access-control-allow-origin", "https://a.com")]


def test_preflight_not_allowed_is_forwarded_by_default():
    f = cors(**POLICY)
    assert f.on_request(preflight("https://evil.com")) is None
    assert f.on_request(preflight("https://x.b.com.evil")) is None  # regex is a full match
    headers: list[tuple[str, str]] = []
    f.on_response(preflight("https://evil.com"), 200, headers)
    assert headers == []


def test_preflight_not_allowed_ignore_answers_without_cors_headers():
    out = cors(
        allow_origins=[{"exact": "https://a.com"}], unmatched_preflights="IGNORE"
    ).on_request(preflight("https://evil.com"))
    assert isinstance(out, LocalReply) and out.status == 200 and out.headers == []


def test_options_without_request_method_or_origin_is_not_a_preflight():
    f = cors(**POLICY)
    assert f.on_request(preflight(acrm=None)) is None
    assert f.on_request(preflight(origin=None)) is None
    assert f.on_request(preflight(acrm="")) is None


def test_wildcard_origin_allows_any():
    for sm in ({"exact": "*"}, {"regex": ".*"}, {}):
        out = cors(allow_origins=[sm]).on_request(preflight("https://whatever.io"))
        assert isinstance(out, LocalReply)
        assert ("access-control-allow-origin", "https://whatever.io") in out.headers


def test_origin_ignore_case():
    f = cors(allow_origins=[{"exact": "https://A.com", "ignore_case": True}])
    assert f.origin_allowed("https://a.COM")
    assert not cors(allow_origins=[{"exact": "https://A.com"}]).origin_allowed("https://a.com")
    assert not cors().origin_allowed("https://a.com")  # no origins: none allowed


def test_simple_request_allowed_gets_headers_on_response():
    f = cors(**POLICY)
    r = req("GET", "/", {"origin": "https://a.com"})
    assert f.on_request(r) is None
    headers = [("content-type", "text/html"), ("access-control-allow-origin", "*")]
    f.on_response(r, 200, headers)
    assert headers == [
        ("content-type", "text/html"),
        ("access-control-allow-origin", "https://a.com"),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", "x-c"),
    ]


def test_simple_request_not_allowed_or_without_origin_is_untouched():
    f = cors(**POLICY)
    for r in (req("GET", "/", {"origin": "https://evil.com"}), req("GET", "/")):
        assert f.on_request(r) is None
        headers = [("a", "1")]
        f.on_response(r, 200, headers)
        assert headers == [("a", "1")]


def test_simple_request_minimal_policy():
    f = cors(allow_origins=[{"exact": "https://a.com"}])
    headers: list[tuple[str, str]] = []
    f.on_response(req("POST", "/", {"origin": "https://a.com"}), 201, headers)
    assert headers == [("access-control-allow-origin", "https://a.com")]


def test_allowed_preflight_on_response_adds_nothing_twice():
    f = cors(**POLICY)
    r = preflight()
    out = f.on_request(r)
    assert isinstance(out, LocalReply)
    headers = list(out.headers)
    f.on_response(r, 200, headers)
    assert headers == out.headers


# --------------------------------------------------------------------------- header ops


def ops(request: bool = True, **data: Any):
    return compile_header_ops(msgspec.convert(data, HeaderOps), request)


def test_request_ops_remove_set_add():
    o = ops(
        set={"X-Set": "s", "x-both": "b"},
        add={"x-add": "a", "x-both": "b2"},
        remove=["x-gone", "X-Set"],
    )
    assert o is not None
    h = {"host": "svc", "x-set": "old", "x-add": "first", "x-gone": "1", "x-keep": "k"}
    apply_request_ops(o, h)
    # removals first, then set (replaces), then add (appends with ", ")
    assert h == {"host": "svc", "x-set": "s", "x-add": "first, a", "x-both": "b, b2", "x-keep": "k"}


def test_request_ops_host_is_an_authority_rewrite():
    o = ops(set={"Host": "new:8080", "x": "1"})
    assert o is not None and o.authority == "new:8080" and o.set == (("x", "1"),)
    r = req()
    apply_request_ops(o, r.headers, r)
    assert r.authority == "new:8080" and r.headers["host"] == "new:8080"
    h = {"host": "old"}
    apply_request_ops(o, h)  # without the request: the header dict only
    assert h["host"] == "new:8080"
    o2 = ops(set={":authority": "a2"})
    assert o2 is not None and o2.authority == "a2" and o2.set == ()


def test_response_ops_on_a_list():
    o = ops(False, set={"Server": "pilotfish"}, add={"set-cookie": "b=2"}, remove=["x-powered-by"])
    assert o is not None
    headers = [
        ("server", "nginx"),
        ("set-cookie", "a=1"),
        ("x-powered-by", "php"),
        ("server", "again"),
    ]
    apply_response_ops(o, headers)
    assert headers == [("set-cookie", "a=1"), ("server", "pilotfish"), ("set-cookie", "b=2")]


def test_response_side_keeps_host_as_a_plain_header():
    o = ops(False, set={"host": "x"})
    assert o is not None and o.authority is None and o.set == (("host", "x"),)


def test_empty_ops_compile_to_none():
    assert compile_header_ops(None, True) is None
    assert ops() is None
    assert HeaderOpsFilter.build(None, HeaderOps()) is None


def test_header_ops_filter():
    f = HeaderOpsFilter.build(
        msgspec.convert({"set": {"x-req": "1"}, "add": {"host": "ignored-for-add"}}, HeaderOps),
        msgspec.convert({"add": {"x-resp": "2"}}, HeaderOps),
    )
    assert f is not None
    r = req()
    assert f.on_request(r) is None
    assert r.headers["x-req"] == "1"
    headers: list[tuple[str, str]] = []
    f.on_response(r, 200, headers)
    assert headers == [("x-resp", "2")]
    only_resp = HeaderOpsFilter.build(None, msgspec.convert({"remove": ["a"]}, HeaderOps))
    assert only_resp is not None and only_resp.request is None
    r = req(headers={"a": "1"})
    only_resp.on_request(r)
    assert r.headers["a"] == "1"


# --------------------------------------------------------------------------- string matching


@pytest.mark.parametrize(
    "sm, value, expected",
    [
        ({"exact": "a"}, "a", True),
        ({"exact": "a"}, "A", False),
        ({"exact": "a", "ignore_case": True}, "A", True),
        ({"prefix": "ab"}, "abc", True),
        ({"prefix": "AB", "ignore_case": True}, "abc", True),
        ({"prefix": "ab"}, "a", False),
        ({"suffix": "bc"}, "abc", True),
        ({"suffix": "BC", "ignore_case": True}, "abc", True),
        ({"suffix": "abcd", "ignore_case": True}, "bcd", False),
        ({"regex": "a+"}, "aaa", True),
        ({"regex": "a+"}, "aab", False),
        ({"regex": "é+"}, "éé", True),
    ],
)
def test_compile_string_match(sm, value, expected):
    pred = compile_string_match(msgspec.convert(sm, StringMatch))
    assert pred is not None and pred(value) is expected


def test_compile_string_match_any_and_errors():
    assert compile_string_match(StringMatch()) is None
    assert compile_string_match(StringMatch(present=True)) is None
    assert compile_string_match(StringMatch(prefix="")) is None
    with pytest.raises(ValueError, match="invalid regex"):
        compile_string_match(StringMatch(regex="("))


def test_describe_string_match():
    assert describe_string_match(None) == "any"
    assert describe_string_match(StringMatch(prefix="/a")) == "prefix '/a'"
    assert (
        describe_string_match(StringMatch(exact="x", ignore_case=True)) == "exact 'x' (ignore case)"
    )
    assert describe_string_match(StringMatch()) == "present"
    assert describe_string_match(StringMatch(present=False)) == "absent"
