"""Structural (schema) validation of raw resource data against the typed models.

The models in ``pilotfish.api.types`` are ``msgspec.Struct`` classes. ``msgspec.convert``
builds them fast, but stops at the first problem. This module walks the raw data against the
same models and reports *every* problem with its field path, the way the Kubernetes API server
reports schema errors for Istio's CRDs: wrong types, unknown fields, missing required fields,
values outside an enum, numbers out of range, malformed durations, and one-of groups with more
than one member set.

Only after the walk finds no error is the data converted (``convert``), so a typed object always
comes from data that is valid at the schema level.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import msgspec
import msgspec.inspect as mi

from pilotfish.api.duration import parse_duration_ns
from pilotfish.api.issues import ERROR, WARNING, FieldPath, Level

# --- annotations used by the models -------------------------------------------------------

#: A duration string such as ``"1.5s"`` (syntax checked, any value).
Duration = Annotated[str, msgspec.Meta(extra={"pf": "duration"})]
#: A duration Istio requires to be at least 1ms (its CRDs carry that rule for most durations).
MinDuration = Annotated[str, msgspec.Meta(extra={"pf": "duration_1ms"})]
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=4294967295)]
Int32 = Annotated[int, msgspec.Meta(ge=-2147483648, le=2147483647)]
Int64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
NonNegInt32 = Annotated[int, msgspec.Meta(ge=0, le=2147483647)]
#: Base64-encoded bytes (protobuf ``bytes`` in JSON).
Base64 = Annotated[str, msgspec.Meta(extra={"pf": "base64"})]


class _ModelMeta(msgspec.StructMeta):
    """Makes every model keyword-only (msgspec applies ``kw_only`` per class, not inherited),
    so required and optional fields can follow each other in any order."""

    def __new__(mcls, name, bases, ns, **kwargs):
        kwargs.setdefault("kw_only", True)
        return super().__new__(mcls, name, bases, ns, **kwargs)


class Model(msgspec.Struct, metaclass=_ModelMeta, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """Base of every typed model: camelCase field names, unknown fields refused, immutable.

    ``_oneofs`` lists groups of (YAML) field names of which at most one may be set, like a
    protobuf ``oneof``.
    """

    _oneofs: ClassVar[tuple[tuple[str, ...], ...]] = ()


class LenientModel(Model, forbid_unknown_fields=False):
    """A model whose unknown fields are tolerated (reported as warnings, then dropped).

    Used inside Kubernetes pod templates, where real manifests carry many fields the mesh
    does not use and Kubernetes versions keep adding more.
    """


# --- compiled schema nodes -----------------------------------------------------------------

_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "object",
    type(None): "null",
}


def _tname(v: Any) -> str:
    return _TYPE_NAMES.get(type(v), type(v).__name__)


def _show(v: Any) -> str:
    if isinstance(v, str):
        return repr(v if len(v) <= 60 else v[:57] + "...")
    if isinstance(v, (dict, list)):
        return _tname(v)
    return repr(v)


class Node:
    expect = "value"

    def walk(self, v: Any, path: FieldPath, out: list) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def type_error(self, v: Any, path: FieldPath, out: list) -> None:
        shown = "" if isinstance(v, (dict, list)) or v is None else f" {_show(v)}"
        out.append((ERROR, path, f"must be {self.expect}, not {_tname(v)}{shown}"))


class AnyNode(Node):
    expect = "any value"

    def walk(self, v, path, out):
        return None


class BoolNode(Node):
    expect = "a boolean (true or false)"

    def walk(self, v, path, out):
        if not isinstance(v, bool):
            self.type_error(v, path, out)


class NoneNode(Node):
    expect = "null"

    def walk(self, v, path, out):
        if v is not None:
            self.type_error(v, path, out)


class IntNode(Node):
    expect = "an integer"

    def __init__(self, t: mi.IntType):
        self.ge = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else None)
        self.le = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else None)

    def walk(self, v, path, out):
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                out.append((ERROR, path, f"must be an integer, not {v!r}"))
                return
            self.type_error(v, path, out)
            return
        self.check_range(v, path, out)

    def check_range(self, v, path, out):
        if self.ge is not None and v < self.ge or self.le is not None and v > self.le:
            if self.ge is not None and self.le is not None:
                out.append((ERROR, path, f"{v} is out of range: must be between {self.ge} and {self.le}"))
            elif self.ge is not None:
                out.append((ERROR, path, f"{v} is out of range: must be at least {self.ge}"))
            else:
                out.append((ERROR, path, f"{v} is out of range: must be at most {self.le}"))


class FloatNode(Node):
    expect = "a number"

    def __init__(self, t: mi.FloatType):
        self.ge = t.ge if t.ge is not None else t.gt
        self.le = t.le if t.le is not None else t.lt

    def walk(self, v, path, out):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.type_error(v, path, out)
            return
        if v != v or v in (float("inf"), float("-inf")):
            out.append((ERROR, path, f"must be a finite number, not {v!r}"))
            return
        if self.ge is not None and v < self.ge or self.le is not None and v > self.le:
            lo = "-inf" if self.ge is None else f"{self.ge:g}"
            hi = "+inf" if self.le is None else f"{self.le:g}"
            out.append((ERROR, path, f"{v:g} is out of range: must be between {lo} and {hi}"))


class StrNode(Node):
    expect = "a string"

    def __init__(self, t: mi.StrType, fmt: str | None = None, hint: str | None = None):
        self.min_length = t.min_length
        self.max_length = t.max_length
        self.pattern = re.compile(t.pattern) if t.pattern else None
        self.fmt = fmt
        self.hint = hint
        if fmt in ("duration", "duration_1ms"):
            self.expect = 'a duration string like "1s" or "100ms"'

    def walk(self, v, path, out):
        if not isinstance(v, str):
            self.type_error(v, path, out)
            return
        if self.min_length is not None and len(v) < self.min_length:
            if self.min_length == 1:
                out.append((ERROR, path, "must not be empty"))
            else:
                out.append((ERROR, path, f"must be at least {self.min_length} characters"))
        if self.max_length is not None and len(v) > self.max_length:
            out.append((ERROR, path, f"must be no more than {self.max_length} characters (has {len(v)})"))
        if self.pattern is not None and not self.pattern.search(v):
            out.append((ERROR, path, self.hint or f"{_show(v)} does not match {self.pattern.pattern}"))
        if self.fmt in ("duration", "duration_1ms"):
            try:
                ns = parse_duration_ns(v)
            except ValueError as e:
                out.append((ERROR, path, str(e)))
                return
            if self.fmt == "duration_1ms" and ns < 1_000_000:
                out.append((ERROR, path, f"{v!r}: must be a valid duration greater than 1ms"))
            elif ns < 0:
                out.append((ERROR, path, f"{v!r}: duration must not be negative"))
        elif self.fmt == "base64":
            import base64
            import binascii

            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                out.append((ERROR, path, "must be base64-encoded data"))


class LiteralNode(Node):
    expect = "a string"

    def __init__(self, values: tuple):
        assert all(isinstance(x, str) for x in values), "only string enums are modelled"
        self.values = frozenset(values)
        self.ordered = values

    def walk(self, v, path, out):
        if not isinstance(v, str):
            self.type_error(v, path, out)
        elif v not in self.values:
            supported = ", ".join(f'"{x}"' for x in self.ordered)
            out.append((ERROR, path, f"unsupported value {_show(v)}: supported values: {supported}"))


class ListNode(Node):
    expect = "a list"

    def __init__(self, item: Node, min_length: int | None, max_length: int | None):
        self.item = item
        self.min_length = min_length
        self.max_length = max_length

    def walk(self, v, path, out):
        if not isinstance(v, list):
            self.type_error(v, path, out)
            return
        if self.min_length is not None and len(v) < self.min_length:
            out.append((ERROR, path, f"must have at least {self.min_length} item(s)"))
        if self.max_length is not None and len(v) > self.max_length:
            out.append((ERROR, path, f"must have at most {self.max_length} items (has {len(v)})"))
        item = self.item
        for i, x in enumerate(v):
            p = path.i(i)
            if x is None:
                out.append((ERROR, p, "must not be null"))
            else:
                item.walk(x, p, out)


class DictNode(Node):
    expect = "a map (object)"

    def __init__(self, key: Node, value: Node, min_length: int | None, max_length: int | None):
        self.key = key
        self.value = value
        self.min_length = min_length
        self.max_length = max_length

    def walk(self, v, path, out):
        if not isinstance(v, dict):
            self.type_error(v, path, out)
            return
        if self.min_length is not None and len(v) < self.min_length:
            out.append((ERROR, path, f"must have at least {self.min_length} entr{'y' if self.min_length == 1 else 'ies'}"))
        if self.max_length is not None and len(v) > self.max_length:
            out.append((ERROR, path, f"must have at most {self.max_length} entries (has {len(v)})"))
        for k, x in v.items():
            p = path.k(str(k))
            self.key.walk(k, p, out)
            if x is None:
                continue  # a null value is an unset entry, as Kubernetes treats it
            self.value.walk(x, p, out)


class UnionNode(Node):
    def __init__(self, options: list[Node]):
        self.options = [o for o in options if not isinstance(o, NoneNode)]
        self.nullable = len(self.options) != len(options)
        self.expect = " or ".join(o.expect for o in self.options) or "null"

    def walk(self, v, path, out):
        if v is None and self.nullable:
            return
        # Delegate to the options that take this kind of value (a map goes to the object
        # option, a string to the string option...), so their own messages come through.
        fitting = [o for o in self.options if _fits(o, v)]
        if not fitting:
            self.type_error(v, path, out)
            return
        first: list | None = None
        for o in fitting:
            sub: list = []
            o.walk(v, path, sub)
            if not any(lvl == ERROR for lvl, _, _ in sub):
                out.extend(sub)
                return
            if first is None:
                first = sub
        out.extend(first or [])


def _fits(node: Node, v: Any) -> bool:
    if isinstance(node, (AnyNode, UnionNode)):
        return True
    if isinstance(v, bool):
        return isinstance(node, BoolNode)
    if isinstance(v, int):
        return isinstance(node, (IntNode, FloatNode))
    if isinstance(v, float):
        return isinstance(node, (FloatNode, IntNode))
    if isinstance(v, str):
        return isinstance(node, (StrNode, LiteralNode))
    if isinstance(v, list):
        return isinstance(node, ListNode)
    if isinstance(v, dict):
        return isinstance(node, (StructNode, DictNode))
    return False


class StructNode(Node):
    expect = "an object"

    def __init__(self, cls: type):
        self.cls = cls
        self.fields: dict[str, Node] = {}
        self.required: list[str] = []
        self.forbid_unknown = True
        self.oneofs: tuple[tuple[str, ...], ...] = getattr(cls, "_oneofs", ())
        self.checks: tuple[Callable[[dict, FieldPath, list], None], ...] = getattr(cls, "_checks", ())

    def walk(self, v, path, out):
        if not isinstance(v, dict):
            self.type_error(v, path, out)
            return
        fields = self.fields
        for k, x in v.items():
            node = fields.get(k)
            p = path.f(str(k))
            if node is None:
                msg = f'unknown field "{k}"'
                close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.75)
                if close:
                    msg += f' (did you mean "{close[0]}"?)'
                if self.forbid_unknown:
                    out.append((ERROR, p, msg))
                else:
                    out.append((WARNING, p, msg + "; ignored"))
                continue
            if x is None:
                continue  # null means unset
            node.walk(x, p, out)
        for name in self.required:
            if v.get(name) is None:
                out.append((ERROR, path.f(name), "required field is missing"))
        for group in self.oneofs:
            present = [g for g in group if v.get(g) is not None]
            if len(present) > 1:
                out.append((ERROR, path, f"only one of {', '.join(group)} may be set (found {', '.join(present)})"))
        for check in self.checks:
            check(v, path, out)


_compiled: dict[type, StructNode] = {}


def _compile(t: Any) -> Node:
    if isinstance(t, mi.StructType):
        node = _compiled.get(t.cls)
        if node is not None:
            return node
        node = StructNode(t.cls)
        _compiled[t.cls] = node  # before the fields: models may be recursive
        node.forbid_unknown = t.forbid_unknown_fields
        for f in t.fields:
            node.fields[f.encode_name] = _compile(f.type)
            if f.required:
                node.required.append(f.encode_name)
        return node
    if isinstance(t, mi.Metadata):
        extra = t.extra or {}
        inner = t.type
        if isinstance(inner, mi.StrType):
            return StrNode(inner, extra.get("pf"), extra.get("hint"))
        return _compile(inner)
    if isinstance(t, mi.StrType):
        return StrNode(t)
    if isinstance(t, mi.BoolType):
        return BoolNode()
    if isinstance(t, mi.IntType):
        return IntNode(t)
    if isinstance(t, mi.FloatType):
        return FloatNode(t)
    if isinstance(t, mi.NoneType):
        return NoneNode()
    if isinstance(t, mi.AnyType):
        return AnyNode()
    if isinstance(t, mi.LiteralType):
        return LiteralNode(t.values)
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return ListNode(_compile(t.item_type), t.min_length, t.max_length)
    if isinstance(t, mi.DictType):
        return DictNode(_compile(t.key_type), _compile(t.value_type), t.min_length, t.max_length)
    if isinstance(t, mi.UnionType):
        return UnionNode([_compile(x) for x in t.types])
    raise TypeError(f"unsupported model type {t!r}")  # pragma: no cover - a bug in the models


def node_for(cls: type) -> Node:
    node = _compiled.get(cls)
    if node is None:
        node = _compile(mi.type_info(cls))
    return node


# --- normalizing raw data ------------------------------------------------------------------


def normalize(v: Any) -> Any:
    """Raw YAML data the way Kubernetes sees it after its YAML-to-JSON step.

    Map keys become strings (YAML ``8080:`` is JSON ``"8080"``), dates stay the text they were
    written as, and null map values are dropped (Kubernetes treats them as unset).
    """
    if isinstance(v, dict):
        return {_key(k): normalize(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.isoformat()
    if isinstance(v, bytes):
        import base64

        return base64.b64encode(v).decode()
    return v


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if k is None:
        return "null"
    if isinstance(k, (_dt.date, _dt.datetime)):
        return k.isoformat()
    return str(k)


def check(cls: type, data: Any, path: FieldPath) -> list[tuple[Level, FieldPath, str]]:
    """All schema problems of ``data`` (already normalized) against model ``cls``."""
    out: list[tuple[Level, FieldPath, str]] = []
    node_for(cls).walk(data, path, out)
    return out


def convert(cls: type, data: Any) -> Any:
    """Build the typed object. Call only on normalized data that :func:`check` accepted."""
    return msgspec.convert(data, cls)
