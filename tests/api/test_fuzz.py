"""Random and mutated documents must produce errors (LoadError or Issues), never crash."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilotfish.api.issues import Issue
from pilotfish.api.kinds import supported
from pilotfish.api.loader import LoadError, Resource, iter_files, load_file, load_text
from pilotfish.api.parsing import ParseError, parse, try_parse
from pilotfish.api.validation import check

from .conftest import BOOKINFO, SAMPLES

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _corpus() -> list[dict]:
    docs = []
    for root in (BOOKINFO, SAMPLES):
        if root.is_dir():
            for f in iter_files([str(root)]):
                if f.endswith((".yaml", ".yml")):
                    docs.extend(r.data for r in load_file(f))
    if not docs:  # without the shared samples, fuzz a few built-in documents
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "r"},
                     "spec": {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r", "subset": "v1"}, "weight": 100}]}]}})
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "r"},
                     "spec": {"ports": [{"port": 9080, "name": "http"}], "selector": {"app": "r"}}})
    return docs


CORPUS = _corpus()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "*", "1s", "0s", "-1ms", "v1", "HTTP", "ISTIO_MUTUAL", "reviews", "*.foo.com", "ns/host",
                     "10.0.0.0/8", "unix:///x", "(", "[a-z", "%", "99999", "mesh"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=12,
)


def _paths(node, prefix=()):
    """Every path to a value inside a document."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(doc))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _get(doc, path[:-1])
        key = path[-1]
        op = draw(st.sampled_from(["drop", "replace", "add", "string", "wrap"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(values)
        elif op == "string":
            parent[key] = draw(st.text(max_size=30))
        elif op == "wrap":
            parent[key] = [parent[key]] if draw(st.booleans()) else {"x": parent[key]}
    return doc


def _assert_issues_ok(issues: list[Issue]) -> None:
    for i in issues:
        assert isinstance(i, Issue)
        assert i.level in ("Error", "Warning")
        assert isinstance(i.path, str) and isinstance(i.message, str) and i.message
        str(i)  # formatting never fails


def _exercise(res: Resource) -> None:
    checked = check(res)
    _assert_issues_ok(checked.issues)
    obj, issues = try_parse(res)
    _assert_issues_ok(issues)
    if checked.obj is not None:
        assert not any(i.level == "Error" for i in checked.issues)
        assert obj is not None  # validation passing implies parsing passes
    try:
        parse(res)
    except ParseError as e:
        assert e.issues


@FUZZ
@given(mutated())
def test_mutated_documents_never_crash(doc):
    _exercise(Resource(doc, "fuzz.yaml", 1))


@FUZZ
@given(mutated())
def test_mutated_documents_through_yaml_text(doc):
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        resources = load_text(text, "fuzz.yaml")
    except LoadError:
        return
    for res in resources:
        _exercise(res)


@FUZZ
@given(st.sampled_from(supported()), values)
def test_random_specs_of_every_kind(info, spec):
    doc = {"apiVersion": info.preferred_api_version, "kind": info.kind, "metadata": {"name": "x"}, "spec": spec}
    _exercise(Resource(doc, "fuzz.yaml", 1))


@FUZZ
@given(st.sampled_from(supported()), st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_random_top_level_fields(info, extra):
    doc = {"apiVersion": info.preferred_api_version, "kind": info.kind, "metadata": {"name": "x"}}
    doc.update(extra)
    _exercise(Resource(doc, "fuzz.yaml", 1))


yaml_ish = st.text(
    alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz0123456789 :-[]{},'\"#&*!|>%@`\n\t.?/\\")),
    max_size=200,
)


@FUZZ
@given(st.one_of(st.text(max_size=200), yaml_ish))
def test_random_text(text):
    try:
        resources = load_text(text, "fuzz.yaml")
    except LoadError as e:
        assert "fuzz.yaml" in str(e)
        return
    for res in resources:
        _exercise(res)


@FUZZ
@given(st.sampled_from(CORPUS), st.data())
def test_truncated_documents(doc, data):
    text = yaml.safe_dump(doc, sort_keys=False)
    cut = data.draw(st.integers(0, len(text)))
    try:
        resources = load_text(text[:cut], "fuzz.yaml")
    except LoadError:
        return
    for res in resources:
        _exercise(res)


def test_recursive_yaml_is_a_load_error():
    try:
        load_text("a: &x [*x]\n", "r.yaml")
    except LoadError as e:
        assert "nests deeper" in str(e)
    else:  # pragma: no cover
        raise AssertionError("recursive document accepted")
