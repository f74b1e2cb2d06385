"""Validating resources the way Istio's admission webhook and the Kubernetes API server do.

``validate(res)`` returns every :class:`~pilotfish.api.issues.Issue` of one resource: document
problems (no ``kind``...), unknown or ignored kinds (warnings), schema problems (types, required
fields, enums, durations, ranges, unknown fields), metadata (DNS-1123 names, labels,
annotations), and the semantic rules of its kind (``pilotfish.api.rules``). An empty list, or
warnings only, means the resource would be accepted.

``check(res)`` does the same and also returns the typed object, so callers that need both
(the config store) pay for one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from pilotfish.api import checks
from pilotfish.api.issues import ERROR, WARNING, FieldPath, Issue, issue_for
from pilotfish.api.kinds import KindInfo
from pilotfish.api.loader import Resource
from pilotfish.api.parsing import _convert, check_schema, effective_namespace, identify
from pilotfish.api.rules import METADATA, Ctx, rules_for
from pilotfish.api.types.meta import TypedObject

_ANNOTATIONS_MAX = 256 * 1024
ALWAYS_REJECT = "istio.io/always-reject"
DRY_RUN = "istio.io/dry-run"


class Checked(NamedTuple):
    """The typed object (None if the resource is refused or skipped) and every issue."""

    obj: TypedObject | None
    info: KindInfo | None
    issues: list[Issue]

    @property
    def ok(self) -> bool:
        return not any(i.level == ERROR for i in self.issues)


def check(res: Resource, default_namespace: str = "default") -> Checked:
    """Parse and validate one resource."""
    info, issues = identify(res, default_namespace)
    if info is None:
        return Checked(None, None, issues)
    ns = effective_namespace(res, info, default_namespace)
    data, found = check_schema(res, info, default_namespace)
    issues.extend(found)
    if isinstance(data.get("metadata"), dict) or "metadata" not in data:
        issues.extend(_check_metadata(res, info, data.get("metadata") or {}, ns))
    if any(i.level == ERROR for i in issues):
        return Checked(None, info, issues)
    obj = _convert(res, info, data, issues, default_namespace)
    if obj is None:
        return Checked(None, info, issues)
    ctx = Ctx(res, info, ns, data)
    for fn in rules_for(info.group, info.kind):
        fn(obj, ctx)
    issues.extend(ctx.issues)
    if info.support == "parsed":
        issues.append(
            issue_for(res, WARNING, "", f"{info.qualified} is parsed and validated, but Pilotfish does not act on it yet", namespace=ns)
        )
    if any(i.level == ERROR for i in issues):
        return Checked(None, info, issues)
    return Checked(obj, info, issues)


def validate(res: Resource, default_namespace: str = "default") -> list[Issue]:
    """Every issue of one resource (errors and warnings)."""
    return check(res, default_namespace).issues


def validate_all(resources: Iterable[Resource], default_namespace: str = "default") -> list[Issue]:
    """Every issue of every resource, in order."""
    out: list[Issue] = []
    for res in resources:
        out.extend(check(res, default_namespace).issues)
    return out


def _check_metadata(res: Resource, info: KindInfo, md: dict[str, Any], ns: str | None) -> list[Issue]:
    out: list[Issue] = []

    def err(path: FieldPath, msg: str) -> None:
        out.append(issue_for(res, ERROR, path, msg, namespace=ns))

    name = md.get("name")
    if not name:
        if md.get("generateName"):
            err(METADATA.f("name"), "generateName is not supported: give the object a name")
        else:
            err(METADATA.f("name"), "required field is missing (name)")
    elif isinstance(name, str):
        if info.group == "" and info.kind == "Namespace":
            msg = checks.validate_dns1123_label(name)
        elif info.group == "" and info.kind == "Service":
            msg = checks.validate_dns1035_label(name)
        else:
            msg = checks.validate_dns1123_subdomain(name)
        if msg:
            err(METADATA.f("name"), msg)
    namespace = md.get("namespace")
    if isinstance(namespace, str) and namespace:
        msg = checks.validate_dns1123_label(namespace)
        if msg:
            err(METADATA.f("namespace"), msg)
    labels = md.get("labels")
    if isinstance(labels, dict):
        for k, v in labels.items():
            p = METADATA.f("labels").k(str(k))
            msg = checks.validate_qualified_name(str(k))
            if msg:
                err(p, msg)
            if isinstance(v, str):
                msg = checks.validate_label_value(v)
                if msg:
                    err(p, msg)
    annotations = md.get("annotations")
    if isinstance(annotations, dict):
        size = 0
        for k, v in annotations.items():
            msg = checks.validate_qualified_name(str(k))
            if msg:
                err(METADATA.f("annotations").k(str(k)), msg)
            size += len(str(k)) + (len(v) if isinstance(v, str) else 0)
        if size > _ANNOTATIONS_MAX:
            err(METADATA.f("annotations"), f"annotations are too long: {size} bytes, must be at most {_ANNOTATIONS_MAX}")
        if info.group.endswith("istio.io"):
            if ALWAYS_REJECT in annotations:
                err(METADATA.f("annotations").k(ALWAYS_REJECT), f'"{ALWAYS_REJECT}" annotation found, rejecting')
            if DRY_RUN in annotations and info.kind != "AuthorizationPolicy":
                err(
                    METADATA.f("annotations").k(DRY_RUN),
                    f"{ns + '/' if ns else ''}{name} has unsupported annotation {DRY_RUN}, please remove the annotation",
                )
    return out
