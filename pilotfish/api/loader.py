"""Reading user resources from YAML or JSON, keeping the file and line of each.

A resource is kept as its raw mapping (``kind``, ``apiVersion``, ``metadata``, ``spec``...)
plus where it came from, so every later message can name ``file:line``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # the C loader is much faster; PyYAML falls back to pure Python without libyaml
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

YAML_SUFFIXES = (".yaml", ".yml", ".json")


class LoadError(Exception):
    """A file that cannot be read as YAML/JSON, with file:line."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        where = f"{file}:{line}" if file and line else (file or "")
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(slots=True)
class Resource:
    """One Kubernetes-style document as written by the user."""

    data: dict[str, Any]
    file: str | None = None
    line: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind") or "")

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion") or "")

    @property
    def group(self) -> str:
        av = self.api_version
        return av.split("/", 1)[0] if "/" in av else ""

    @property
    def metadata(self) -> dict[str, Any]:
        md = self.data.get("metadata")
        return md if isinstance(md, dict) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return str(ns) if ns else None

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.data.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def labels(self) -> dict[str, str]:
        lb = self.metadata.get("labels")
        return lb if isinstance(lb, dict) else {}

    @property
    def annotations(self) -> dict[str, str]:
        an = self.metadata.get("annotations")
        return an if isinstance(an, dict) else {}

    @property
    def origin(self) -> str:
        """``file:line`` (or just the file, or empty) for messages."""
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def __repr__(self) -> str:
        return f"<{self.kind} {self.namespace or ''}/{self.name} {self.origin}>"


def _expand_list(
    doc: Any, file: str | None, line: int | None, lines: dict[tuple, int] | None = None
) -> Iterator[Resource]:
    """A ``kind: List`` (or ``*List``) document holds its resources under ``items``.

    ``lines`` maps field paths (tuples of keys and indexes) to their line in the file; each
    resource gets its own map in ``extra["lines"]`` so messages can point at a field's line.
    """
    if _too_deep(doc):
        raise LoadError(f"document nests deeper than {MAX_DEPTH} levels (recursive YAML anchors?)", file, line)
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and isinstance(
        doc.get("items"), list
    ):
        for i, item in enumerate(doc["items"]):
            item_line = lines.get(("items", i), line) if lines else line
            if isinstance(item, dict):
                res = Resource(item, file, item_line)
                if lines:
                    res.extra["lines"] = {
                        p[2:]: ln for p, ln in lines.items() if len(p) > 2 and p[0] == "items" and p[1] == i
                    }
                yield res
            else:
                raise LoadError("list item is not a mapping", file, item_line)
    elif isinstance(doc, dict):
        res = Resource(doc, file, line)
        if lines:
            res.extra["lines"] = lines
        yield res
    else:
        raise LoadError(f"document is a {type(doc).__name__}, not a mapping", file, line)


MAX_DEPTH = 100


def _too_deep(doc: Any) -> bool:
    """Whether containers nest deeper than MAX_DEPTH (a recursive structure always does)."""
    stack = [(doc, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values() if isinstance(x, (dict, list)))
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v if isinstance(x, (dict, list)))
    return False


def _line_map(root: yaml.Node) -> dict[tuple, int]:
    """Field path -> 1-based line of the key (for mappings) or item (for sequences)."""
    lines: dict[tuple, int] = {}
    seen: set[int] = set()
    stack: list[tuple[tuple, yaml.Node]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:  # an alias of a node already walked (or a recursive one)
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    p = path + (k.value,)
                    lines[p] = k.start_mark.line + 1
                    stack.append((p, v))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = path + (i,)
                lines[p] = v.start_mark.line + 1
                stack.append((p, v))
    return lines


def load_yaml_text(text: str, file: str | None = None) -> list[Resource]:
    """Parse a multi-document YAML text; empty documents are skipped."""
    out: list[Resource] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            line = node.start_mark.line + 1
            doc = loader.construct_document(node)
            if doc is None:
                continue
            out.extend(_expand_list(doc, file, line, _line_map(node)))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise LoadError(f"invalid YAML: {e.problem or e}", file, line) from None
    except yaml.YAMLError as e:
        raise LoadError(f"invalid YAML: {e}", file) from None
    finally:
        loader.dispose()
    return out


def load_json_text(text: str, file: str | None = None) -> list[Resource]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LoadError(f"invalid JSON: {e.msg}", file, e.lineno) from None
    docs = doc if isinstance(doc, list) else [doc]
    out: list[Resource] = []
    for d in docs:
        out.extend(_expand_list(d, file, 1))
    return out


def load_text(text: str, file: str | None = None) -> list[Resource]:
    stripped = text.lstrip()
    if file and file.endswith(".json") or stripped.startswith(("{", "[")):
        try:
            return load_json_text(text, file)
        except LoadError:
            if file and file.endswith(".json"):
                raise
    return load_yaml_text(text, file)


def load_file(path: str) -> list[Resource]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise LoadError(f"cannot read: {e.strerror}", path) from None
    except UnicodeDecodeError:
        raise LoadError("not UTF-8 text", path) from None
    return load_text(text, path)


def iter_files(paths: Iterable[str]) -> Iterator[str]:
    """Files named directly, and YAML/JSON files found under directories, sorted."""
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    if name.endswith(YAML_SUFFIXES):
                        yield os.path.join(root, name)
        else:
            yield p


def load_paths(paths: Iterable[str]) -> list[Resource]:
    out: list[Resource] = []
    for f in iter_files(paths):
        out.extend(load_file(f))
    return out
