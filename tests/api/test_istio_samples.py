"""Istio's own manifests (bookinfo, samples) must parse and validate with no error, unmodified."""

import time

import pytest

from pilotfish.api.loader import YAML_SUFFIXES, iter_files, load_file
from pilotfish.api.parsing import ParseError, parse
from pilotfish.api.validation import check, validate_all

from .conftest import BOOKINFO, SAMPLES, needs_shared

pytestmark = needs_shared


def _manifests(root):
    # Every YAML file; samples/jwt/ also holds a JWKS (jwks.json), a key and tokens, which are
    # data for the JWT tasks, not Kubernetes resources.
    return [f for f in iter_files([str(root)]) if f.endswith((".yaml", ".yml"))]


def _all_files():
    return _manifests(BOOKINFO) + _manifests(SAMPLES)


@pytest.mark.parametrize("path", _all_files(), ids=lambda p: p.split("istio/", 1)[-1])
def test_file_has_no_errors(path):
    resources = load_file(path)
    assert resources, f"{path} holds no resource"
    errors = [i for i in validate_all(resources) if i.level == "Error"]
    assert errors == [], "\n".join(map(str, errors))


def test_every_kind_in_the_samples_is_parsed_or_knowingly_skipped():
    resources = [r for f in _all_files() for r in load_file(f)]
    skipped = set()
    for r in resources:
        c = check(r)
        if c.obj is None:
            skipped.add((r.group, r.kind))
            assert c.issues and all(i.level == "Warning" for i in c.issues)
    # EnvoyFilter is recognized and ignored with a warning; everything else becomes a typed object
    assert skipped == {("networking.istio.io", "EnvoyFilter")}


def test_typed_objects_from_bookinfo():
    (vs,) = [r for r in load_file(str(BOOKINFO / "virtual-service-reviews-90-10.yaml"))]
    obj = parse(vs)
    assert obj.spec.hosts == ["reviews"]
    routes = obj.spec.http[0].route
    assert [(d.destination.subset, d.weight) for d in routes] == [("v1", 90), ("v2", 10)]
    deploy = next(r for r in load_file(str(BOOKINFO / "bookinfo.yaml")) if r.kind == "Deployment")
    d = parse(deploy)
    assert d.spec.replicas == 1
    assert d.spec.template.spec.containers[0].ports[0].container_port == 9080
    assert d.spec.template.spec.service_account_name == "bookinfo-details"


def test_envoy_filter_is_not_parsed():
    ef = load_file(str(BOOKINFO / "productpage_envoy_ratelimit.yaml"))[0]
    with pytest.raises(ParseError, match="not supported"):
        parse(ef)


def test_bookinfo_parse_and_validate_is_fast(capsys):
    files = [f for f in iter_files([str(BOOKINFO)]) if f.endswith(YAML_SUFFIXES)]
    t0 = time.perf_counter()
    resources = [r for f in files for r in load_file(f)]
    t1 = time.perf_counter()
    issues = validate_all(resources)
    t2 = time.perf_counter()
    assert not [i for i in issues if i.level == "Error"]
    with capsys.disabled():
        print(f"\nbookinfo: {len(resources)} resources, load {1000 * (t1 - t0):.1f} ms, "
              f"parse+validate {1000 * (t2 - t1):.1f} ms")
