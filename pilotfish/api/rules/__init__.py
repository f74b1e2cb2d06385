"""Semantic validation rules, one module per API group.

A rule is a function ``rule(obj, ctx)`` registered for a (group, kind) with :func:`rule`. It
reads the typed object and reports problems through :class:`Ctx` with field paths written the
way the user wrote the YAML (``spec.http[0].route``). Rules mirror what Istio's admission webhook
(and, for core kinds, the Kubernetes API server) checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pilotfish.api.issues import ERROR, WARNING, FieldPath, Issue, issue_for

if TYPE_CHECKING:  # pragma: no cover
    from pilotfish.api.kinds import KindInfo
    from pilotfish.api.loader import Resource

SPEC = FieldPath().f("spec")
METADATA = FieldPath().f("metadata")


class Ctx:
    """Where a rule reports: the resource, its effective namespace, and the issues so far."""

    __slots__ = ("res", "info", "namespace", "data", "issues")

    def __init__(self, res: Resource, info: KindInfo, namespace: str | None, data: Any):
        self.res = res
        self.info = info
        self.namespace = namespace
        self.data = data  # the normalized raw document, for presence checks
        self.issues: list[Issue] = []

    def error(self, path: FieldPath, message: str, code: str | None = None) -> None:
        self.issues.append(self._issue(ERROR, path, message, code))

    def warn(self, path: FieldPath, message: str, code: str | None = None) -> None:
        self.issues.append(self._issue(WARNING, path, message, code))

    def check(self, path: FieldPath, message: str | None) -> None:
        """Report ``message`` as an error if it is not None (for ``validate_*`` helpers)."""
        if message:
            self.error(path, message)

    def check_all(self, path: FieldPath, messages: Iterable[str]) -> None:
        for m in messages:
            self.error(path, m)

    def _issue(self, level, path, message, code) -> Issue:
        issue = issue_for(self.res, level, path, message, namespace=self.namespace)
        return replace(issue, code=code) if code else issue

    @property
    def name(self) -> str:
        return self.res.name


Rule = Callable[[Any, Ctx], None]
RULES: dict[tuple[str, str], list[Rule]] = {}


def rule(group: str, *kinds: str) -> Callable[[Rule], Rule]:
    """Register ``fn`` as a semantic rule of the given kinds of ``group``."""

    def deco(fn: Rule) -> Rule:
        for kind in kinds:
            RULES.setdefault((group, kind), []).append(fn)
        return fn

    return deco


def rules_for(group: str, kind: str) -> list[Rule]:
    _load()
    return RULES.get((group, kind), [])


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        from pilotfish.api.rules import gatewayapi, k8s, networking, security, telemetry  # noqa: F401

        _loaded = True
