"""Problems found in user resources: what, where in the object, and where in the file.

An :class:`Issue` is either an ``Error`` (the resource is refused, as Istio's admission
webhook or the Kubernetes API server would refuse it) or a ``Warning`` (accepted, but the
user should know: deprecated fields, ignored kinds, settings that have no effect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from pilotfish.api.loader import Resource

ERROR: Literal["Error"] = "Error"
WARNING: Literal["Warning"] = "Warning"

Level = Literal["Error", "Warning"]


class FieldPath:
    """A path into a resource, e.g. ``spec.http[0].route[1].weight``.

    It keeps the raw parts (for looking up the YAML line of a field) and renders the way
    Kubernetes renders field paths: ``.field``, ``[index]`` and ``[mapKey]``.
    """

    __slots__ = ("parts", "_text")

    def __init__(self, parts: tuple[str | int, ...] = (), text: str = ""):
        self.parts = parts
        self._text = text

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        """Build from a dotted path with ``[n]`` indexes (map keys are not distinguishable)."""
        p = cls()
        for segment in text.split(".") if text else ():
            name, _, rest = segment.partition("[")
            if name:
                p = p.f(name)
            while rest:
                idx, _, rest = rest.partition("]")
                rest = rest.lstrip("[")
                p = p.i(int(idx)) if idx.isdigit() else p.k(idx)
        return p

    def f(self, name: str) -> FieldPath:
        """A child field."""
        return FieldPath(self.parts + (name,), f"{self._text}.{name}" if self._text else name)

    def i(self, index: int) -> FieldPath:
        """A list item."""
        return FieldPath(self.parts + (index,), f"{self._text}[{index}]")

    def k(self, key: str) -> FieldPath:
        """A map entry."""
        return FieldPath(self.parts + (key,), f"{self._text}[{key}]")

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"FieldPath({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FieldPath):
            return self._text == other._text
        if isinstance(other, str):
            return self._text == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._text)


ROOT = FieldPath()


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem with one resource."""

    level: Level
    kind: str
    namespace: str | None
    name: str
    path: str
    message: str
    file: str | None = None
    line: int | None = None
    #: Istio's message type when there is one (e.g. ``VirtualServiceUnreachableRule``), so that
    #: analyzers can map webhook warnings to their IST codes.
    code: str | None = None

    @property
    def is_error(self) -> bool:
        return self.level == ERROR

    @property
    def resource_name(self) -> str:
        """``namespace/name``, or ``name`` for cluster-scoped resources."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def origin(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def __str__(self) -> str:
        if self.kind or self.name:
            who = f"{self.kind or '<no kind>'} {self.resource_name if self.name else '<no name>'}"
        else:
            who = "document"
        where = f" ({self.origin})" if self.origin else ""
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{self.level}: {who}{where}: {what}"


def issue_for(
    res: Resource,
    level: Level,
    path: FieldPath | str,
    message: str,
    *,
    namespace: str | None = None,
) -> Issue:
    """An issue about ``res``, with the line of the deepest part of ``path`` found in the file."""
    fp = path if isinstance(path, FieldPath) else FieldPath.parse(path)
    return Issue(
        level=level,
        kind=res.kind,
        namespace=namespace if namespace is not None else res.namespace,
        name=res.name,
        path=str(fp),
        message=message,
        file=res.file,
        line=line_of(res, fp.parts),
    )


def line_of(res: Resource, parts: tuple[str | int, ...]) -> int | None:
    """The line of the deepest prefix of ``parts`` the loader recorded, else the document's."""
    lines = res.extra.get("lines") if res.extra else None
    if lines:
        for n in range(len(parts), 0, -1):
            line = lines.get(parts[:n])
            if line is not None:
                return line
    return res.line


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.level == ERROR]


def warnings(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.level == WARNING]


def has_errors(issues: list[Issue]) -> bool:
    return any(i.level == ERROR for i in issues)
