"""Find the line of a field inside a resource's YAML, for messages that name a field.

The loader records where each document starts; when a message points at a field (say
``spec.http[0].route[1].destination.host``) we re-read that file's node tree, once per file
and only for files with such messages, and take the line of the deepest node on the path.
"""

from __future__ import annotations

from collections.abc import Iterable

import yaml

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

from .core import Message, Path


def _compose(path: str) -> list[yaml.Node]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return [n for n in yaml.compose_all(text, Loader=_Loader) if n is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []


def _get(node: yaml.Node, key: str | int) -> tuple[yaml.Node | None, int | None]:
    """The child at ``key`` and the line to report for it (a mapping key's own line)."""
    if isinstance(key, int):
        if isinstance(node, yaml.SequenceNode) and 0 <= key < len(node.value):
            child = node.value[key]
            return child, child.start_mark.line + 1
        return None, None
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v, k.start_mark.line + 1
    return None, None


def _scalar(node: yaml.Node | None, *keys: str) -> str | None:
    for k in keys:
        if node is None:
            return None
        node, _ = _get(node, k)
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _document_for(
    docs: list[yaml.Node], line: int | None, kind: str, name: str
) -> yaml.Node | None:
    for doc in docs:
        if line is not None and doc.start_mark.line + 1 != line:
            continue
        items, _ = _get(doc, "items")
        if isinstance(items, yaml.SequenceNode) and _scalar(doc, "kind") != kind:
            for item in items.value:
                if _scalar(item, "kind") == kind and _scalar(item, "metadata", "name") == name:
                    return item
            continue
        return doc
    return None


def line_of(doc: yaml.Node, path: Path) -> int | None:
    node: yaml.Node | None = doc
    line: int | None = None
    for key in path:
        if node is None:
            break
        node, key_line = _get(node, key)
        if key_line is None:
            break
        line = key_line
    return line


def _from_line_map(lines: dict, path: Path) -> int | None:
    """The line of the deepest recorded prefix of ``path`` in the loader's line map."""
    for k in range(len(path), 0, -1):
        line = lines.get(path[:k])
        if line is not None:
            return line
    return None


def resolve(messages: Iterable[Message]) -> None:
    """Set ``line`` on messages that name a field of a resource read from a file. The loader's
    per-resource line map is used when it has one; else the file is re-read."""
    by_file: dict[str, list[Message]] = {}
    for msg in messages:
        if not msg.path or msg.obj is None or msg.line is not None or msg.obj.synthetic:
            continue
        line_map = msg.obj.res.extra.get("lines") if isinstance(msg.obj.res.extra, dict) else None
        if isinstance(line_map, dict) and line_map:
            msg.line = _from_line_map(line_map, msg.path)
        elif msg.obj.res.file:
            by_file.setdefault(msg.obj.res.file, []).append(msg)
    for file, msgs in by_file.items():
        docs = _compose(file)
        if not docs:
            continue
        for msg in msgs:
            obj = msg.obj
            assert obj is not None and msg.path is not None
            doc = _document_for(docs, obj.res.line, obj.kind, obj.name)
            if doc is not None:
                msg.line = line_of(doc, msg.path)
