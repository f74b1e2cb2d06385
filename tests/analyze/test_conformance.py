"""Istio's own analyzer test table, run through Pilotfish's analyzers.

Each case of ``analyze/expected.json`` names one analyzer, its input files and the expected
multiset of (code, resource). Cases of analyzers that do not apply to Pilotfish are skipped with
the reason; every other case must match exactly.
"""

from __future__ import annotations

import calendar
import json
from collections import Counter

import pytest

from pilotfish.analyze import NOT_APPLICABLE, all_analyzers, analyze
from pilotfish.analyze.meshconfig import load_mesh_config
from pilotfish.api.loader import load_file

from .conftest import ANALYZE_DATA, needs_shared

# The day the table was taken from Istio; certificates are judged as of then.
SNAPSHOT = float(calendar.timegm((2026, 8, 22, 0, 0, 0, 0, 0, 0)))


def _cases() -> list:
    path = ANALYZE_DATA / "expected.json"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)


CASES = _cases()


def _inputs(case: dict) -> list[str]:
    files = list(case.get("inputFiles") or [])
    files += case.get("cluster1InputFiles") or []
    files += case.get("cluster2InputFiles") or []
    return files


def run_case(case: dict, **kw) -> Counter:
    testdata = ANALYZE_DATA / "testdata"
    resources = []
    for f in _inputs(case):
        resources += load_file(str(testdata / f))
    mesh = (
        load_mesh_config(str(testdata / case["meshConfigFile"]))
        if case.get("meshConfigFile")
        else None
    )
    result = analyze(
        resources,
        [case["analyzer"]],
        # The harness of Istio's test: no default namespace, pods in the input are live state.
        default_namespace="",
        workloads_known=True,
        services_known=True,
        mesh=mesh,
        now=SNAPSHOT,
        **kw,
    )
    return Counter((m.code, m.resource) for m in result.messages)


@needs_shared
def test_table_is_there():
    assert len(CASES) == 105


@needs_shared
@pytest.mark.parametrize("case", CASES, ids=[f"{i:03d}-{c['name']}" for i, c in enumerate(CASES)])
def test_istio_case(case):
    name = case["analyzer"]
    if name in NOT_APPLICABLE:
        pytest.skip(f"{name} does not apply to Pilotfish: {NOT_APPLICABLE[name]}")
    assert name in all_analyzers(), f"no Pilotfish analyzer {name} and not marked not applicable"
    expected = Counter((e["code"], e["resource"]) for e in case["expected"])
    got = run_case(case)
    assert got == expected, f"missing {expected - got}, unexpected {got - expected}"


@needs_shared
@pytest.mark.parametrize("case", CASES, ids=[f"{i:03d}-{c['name']}" for i, c in enumerate(CASES)])
def test_istio_case_without_standin_pods(case):
    """Stand-in pods for Deployments must not change any of Istio's answers."""
    if case["analyzer"] in NOT_APPLICABLE:
        pytest.skip("not applicable")
    expected = Counter((e["code"], e["resource"]) for e in case["expected"])
    assert run_case(case, workloads_from_controllers=False) == expected


@needs_shared
def test_every_analyzer_of_the_table_is_covered():
    names = {c["analyzer"] for c in CASES}
    assert names <= set(all_analyzers()) | set(NOT_APPLICABLE)
