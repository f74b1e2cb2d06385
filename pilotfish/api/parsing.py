"""From a loaded :class:`~pilotfish.api.loader.Resource` to a typed object.

:func:`parse` checks the document's ``apiVersion`` and ``kind`` against the kind registry, walks
the data against the kind's model (every schema problem is reported, with its path and line),
and returns the typed object. It raises :class:`ParseError` carrying the issues otherwise.
Semantic rules (Istio's admission checks) are :mod:`pilotfish.api.validation`'s job.
"""

from __future__ import annotations

from typing import Any

from pilotfish.api import schema
from pilotfish.api.issues import ERROR, WARNING, FieldPath, Issue, issue_for
from pilotfish.api.kinds import KindInfo, for_resource, lookup, split_api_version
from pilotfish.api.loader import Resource
from pilotfish.api.types.meta import TypedObject


class ParseError(ValueError):
    """A resource that cannot become a typed object; ``issues`` says why (errors first)."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        errs = [i for i in issues if i.level == ERROR] or issues
        text = str(errs[0]) if errs else "cannot parse resource"
        if len(errs) > 1:
            text += f" (and {len(errs) - 1} more)"
        super().__init__(text)


def effective_namespace(res: Resource, info: KindInfo | None, default: str = "default") -> str | None:
    """The namespace a namespaced object lands in (its own, else ``default``); None if cluster-scoped."""
    if info is not None and not info.namespaced:
        return None
    return res.namespace or default


def identify(res: Resource, default_namespace: str = "default") -> tuple[KindInfo | None, list[Issue]]:
    """The kind of a document, or the issues that stop it (missing kind, unknown kind...).

    Unknown and ignored kinds give a warning and no KindInfo: the caller skips the document.
    """
    data = res.data
    issues: list[Issue] = []
    ns = res.namespace or default_namespace

    def bad(level, path, msg):
        issues.append(issue_for(res, level, path, msg, namespace=ns))

    api_version = data.get("apiVersion")
    kind = data.get("kind")
    if not api_version and not kind:
        bad(ERROR, "", "not a Kubernetes resource: apiVersion and kind are missing")
        return None, issues
    if api_version is None or api_version == "":
        bad(ERROR, "apiVersion", "required field is missing (every document needs apiVersion and kind)")
    elif not isinstance(api_version, str):
        bad(ERROR, "apiVersion", f"must be a string, not {type(api_version).__name__}")
    if kind is None or kind == "":
        bad(ERROR, "kind", "required field is missing (every document needs apiVersion and kind)")
    elif not isinstance(kind, str):
        bad(ERROR, "kind", f"must be a string, not {type(kind).__name__}")
    if issues:
        return None, issues
    group, version = split_api_version(api_version)
    info = lookup(group, kind)
    if info is None:
        hint = ""
        for k in _same_kind(kind):
            hint = f" ({kind} exists in API group {k.group or 'core'}: apiVersion {k.preferred_api_version})"
            break
        bad(WARNING, "", f"unknown kind {kind!r} in apiVersion {api_version!r}; skipped{hint}")
        return None, issues
    if version not in info.versions:
        bad(
            ERROR,
            "apiVersion",
            f"no kind {kind!r} in version {api_version!r} (known versions: {', '.join(info.api_versions)})",
        )
        return None, issues
    if info.support == "ignored":
        why = f": {info.note}" if info.note else ""
        bad(WARNING, "", f"{info.qualified} is not supported by Pilotfish and is ignored{why}")
        return None, issues
    return info, issues


def _same_kind(kind: str) -> list[KindInfo]:
    from pilotfish.api.kinds import KINDS

    return [k for k in KINDS if k.kind == kind and k.model is not None]


def check_schema(res: Resource, info: KindInfo, default_namespace: str = "default") -> tuple[Any, list[Issue]]:
    """Normalized data and the schema issues of ``res`` against ``info``'s model."""
    assert info.model is not None
    data = schema.normalize(res.data)
    ns = effective_namespace(res, info, default_namespace)
    found = schema.check(info.model, data, FieldPath())
    issues = [issue_for(res, level, path, msg, namespace=ns) for level, path, msg in found]
    return data, issues


def try_parse(res: Resource, default_namespace: str = "default") -> tuple[TypedObject | None, list[Issue]]:
    """The typed object (or None) and every issue found on the way (schema level only)."""
    info, issues = identify(res, default_namespace)
    if info is None:
        return None, issues
    data, found = check_schema(res, info, default_namespace)
    issues.extend(found)
    if any(i.level == ERROR for i in issues):
        return None, issues
    return _convert(res, info, data, issues, default_namespace), issues


def _convert(res: Resource, info: KindInfo, data: Any, issues: list[Issue], default_namespace: str) -> TypedObject | None:
    try:
        return schema.convert(info.model, data)
    except Exception as e:  # pragma: no cover - the schema walk accepts only convertible data
        ns = effective_namespace(res, info, default_namespace)
        issues.append(issue_for(res, ERROR, "", f"cannot build {info.kind}: {e}", namespace=ns))
        return None


def parse(res: Resource, default_namespace: str = "default") -> TypedObject:
    """The typed object of a resource; raises :class:`ParseError` if it has schema errors or is
    of a kind Pilotfish does not parse (unknown or ignored kinds)."""
    obj, issues = try_parse(res, default_namespace)
    if obj is None:
        raise ParseError(issues)
    return obj


def kind_of(res: Resource) -> KindInfo | None:
    """The registry entry for a resource, if any (no messages)."""
    return for_resource(res)
