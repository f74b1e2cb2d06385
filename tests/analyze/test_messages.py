"""Pilotfish's table of message codes against Istio's, and Go-style message rendering."""

from __future__ import annotations

import json

import pytest

from pilotfish.analyze import BY_CODE, MESSAGES, Level, all_analyzers
from pilotfish.analyze.messages import LEGACY_CODES, go_format

from .conftest import ANALYZE_DATA, needs_shared


def _istio_table() -> dict:
    with open(ANALYZE_DATA / "messages_full.json", encoding="utf-8") as f:
        return json.load(f)


@needs_shared
def test_table_matches_istio():
    istio = _istio_table()
    for name, t in MESSAGES.items():
        if t.code in LEGACY_CODES:
            assert t.code not in {v["code"] for v in istio.values()}
            continue
        assert name in istio, name
        assert (t.code, str(t.level), t.template) == (
            istio[name]["code"],
            istio[name]["level"],
            istio[name]["template"],
        ), name


@needs_shared
def test_codes_json_agrees():
    with open(ANALYZE_DATA / "codes.json", encoding="utf-8") as f:
        codes = json.load(f)
    for name, code in codes.items():
        assert MESSAGES[name].code == code


def test_every_code_an_analyzer_emits_is_in_the_table():
    for a in all_analyzers().values():
        for code in a.codes:
            assert code in BY_CODE, (a.name, code)


@pytest.mark.parametrize(
    "template, params, text",
    [
        (
            "Referenced %s not found: %q",
            ("host", "reviews"),
            'Referenced host not found: "reviews"',
        ),
        ("ports %v", ([80, 443],), "ports [80 443]"),
        ("sidecars %v in %q", (["a", "b"], "ns"), 'sidecars [a b] in "ns"'),
        ("port %d, mTLS %t", (9080, False), "port 9080, mTLS false"),
        ("100%% %s", ("sure",), "100% sure"),
        ("missing %s", (), "missing %!s(MISSING)"),
    ],
)
def test_go_format(template, params, text):
    assert go_format(template, params) == text


def test_levels():
    assert Level.parse("warning") is Level.WARNING
    assert Level.ERROR.at_least(Level.WARNING)
    assert not Level.INFO.at_least(Level.WARNING)
    with pytest.raises(ValueError):
        Level.parse("fatal")
