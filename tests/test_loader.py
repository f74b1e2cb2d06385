import json

import pytest

from pilotfish.api.loader import LoadError, load_paths, load_text

MULTI = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
---
# a comment-only document is skipped
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: prod
spec:
  hosts: [reviews]
"""


def test_multi_document_keeps_lines():
    res = load_text(MULTI, "f.yaml")
    assert [(r.kind, r.name, r.namespace, r.line) for r in res] == [
        ("Service", "reviews", None, 1),
        ("VirtualService", "reviews", "prod", 8),
    ]
    assert res[1].origin == "f.yaml:8"
    assert res[1].group == "networking.istio.io"
    assert res[1].spec == {"hosts": ["reviews"]}


def test_list_kind_is_expanded():
    doc = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}},
    ]}
    res = load_text(json.dumps(doc), "l.json")
    assert [r.name for r in res] == ["a", "b"]


def test_bad_yaml_names_file_and_line():
    with pytest.raises(LoadError) as e:
        load_text("a: 1\nb: [1, 2\nc: 3\n", "bad.yaml")
    assert e.value.file == "bad.yaml"
    assert e.value.line is not None and e.value.line >= 2
    assert "bad.yaml:" in str(e.value)


def test_scalar_document_is_an_error():
    with pytest.raises(LoadError, match="not a mapping"):
        load_text("just a string\n", "s.yaml")


def test_load_paths_walks_directories(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text("kind: Namespace\nmetadata: {name: a}\n")
    (tmp_path / "sub" / "b.yml").write_text("kind: Namespace\nmetadata: {name: b}\n")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [r.name for r in load_paths([str(tmp_path)])] == ["a", "b"]
