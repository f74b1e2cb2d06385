"""auth.PrincipalAnalyzer (Pilotfish): the identities an AuthorizationPolicy names must be
possible in this mesh, and identity rules need mutual TLS.

- A principal ``<trust domain>/ns/<namespace>/sa/<service account>`` whose trust domain is not
  the mesh's, whose namespace does not exist, or whose service account no workload of that
  namespace runs as, can never match (IST0101).
- A DENY or AUDIT policy whose every rule needs a peer identity (principals or namespaces) has no
  impact on workloads that PeerAuthentication puts in plaintext (IST0167).
"""

from __future__ import annotations

import re

from .authz import namespace_matches
from .core import Context, Obj, analyzer
from .messages import m
from .mtls import effective_peer_auth
from .util import (
    as_dict,
    as_list,
    as_str,
    known_namespaces,
    root_namespace,
    selector_matches,
    template_of,
    workload_selector,
)

PRINCIPAL = re.compile(r"^([^/*]+)/ns/([^/*]+)/sa/([^/*]+)$")
IDENTITY_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces")


def _service_accounts(ctx: Context) -> dict[str, set[str]]:
    """Service accounts workloads run as, by namespace."""
    out: dict[str, set[str]] = {}
    for pod in ctx.all("Pod"):
        spec = pod.spec
        out.setdefault(pod.ns, set()).add(
            as_str(spec.get("serviceAccountName") or spec.get("serviceAccount")) or "default"
        )
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        for obj in ctx.all(kind):
            spec = as_dict(template_of(obj).get("spec"))
            out.setdefault(obj.ns, set()).add(
                as_str(spec.get("serviceAccountName") or spec.get("serviceAccount")) or "default"
            )
    return out


def _selected_pods(ctx: Context, ap: Obj) -> list[Obj]:
    sel = workload_selector(ap) or {}
    root = root_namespace(ctx)
    return [
        p
        for p in ctx.all("Pod")
        if (ap.ns == root or p.ns == ap.ns) and selector_matches(sel, p.labels)
    ]


@analyzer(
    "auth.PrincipalAnalyzer",
    "Checks that authorization policies name identities that can exist, with mutual TLS to carry them",
    ("IST0101", "IST0167"),
    pilotfish=True,
)
def principals(ctx: Context) -> None:
    trust_domains = {as_str(ctx.mesh.get("trustDomain")) or "cluster.local"}
    trust_domains.update(as_str(a) for a in as_list(ctx.mesh.get("trustDomainAliases")))
    namespaces = known_namespaces(ctx)
    accounts = _service_accounts(ctx)
    for ap in ctx.all("AuthorizationPolicy"):
        rules = [as_dict(r) for r in as_list(ap.spec.get("rules"))]
        for i, rule in enumerate(rules):
            for j, frm in enumerate(as_list(rule.get("from"))):
                source = as_dict(as_dict(frm).get("source"))
                for field in ("principals", "notPrincipals"):
                    for k, principal in enumerate(as_list(source.get(field))):
                        principal = as_str(principal)
                        match = PRINCIPAL.match(principal)
                        if not match:
                            continue
                        td, ns, sa = match.groups()
                        exists = (
                            td in trust_domains
                            and any(namespace_matches(n, ns) for n in namespaces)
                            and (ns not in accounts or sa in accounts[ns])
                        )
                        if not exists:
                            ctx.report(
                                m("ReferencedResourceNotFound"),
                                ap,
                                "principal",
                                principal,
                                path=("spec", "rules", i, "from", j, "source", field, k),
                            )
        action = as_str(ap.spec.get("action")).upper() or "ALLOW"
        if action not in ("DENY", "AUDIT") or not rules:
            continue
        if not all(_needs_identity(rule) for rule in rules):
            continue
        pods = _selected_pods(ctx, ap)
        plaintext = [effective_peer_auth(ctx, p.ns, p.labels) for p in pods]
        if pods and all(mode == "DISABLE" for mode, _ in plaintext):
            pa = plaintext[0][1]
            who = f"PeerAuthentication {pa.full_name}" if pa is not None else "PeerAuthentication"
            ctx.report(
                m("IneffectivePolicy"),
                ap,
                f"its rules match peer identities (principals, namespaces), which need mutual TLS, "
                f"but {who} disables mutual TLS for the selected workloads",
                path=("spec", "rules"),
            )


def _needs_identity(rule: dict) -> bool:
    froms = as_list(rule.get("from"))
    if not froms:
        return False
    return all(
        any(as_list(as_dict(as_dict(f).get("source")).get(k)) for k in IDENTITY_FIELDS)
        for f in froms
    )
