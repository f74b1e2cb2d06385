"""auth.MTLSAnalyzer: a DestinationRule's client TLS mode must agree with the PeerAuthentication
of the workloads behind its host: plaintext (``DISABLE``) to STRICT servers, or Istio mTLS
(``ISTIO_MUTUAL``) to servers with mTLS disabled, fails every connection (IST0113).

The check and its code come from older Istio releases, where it compared DestinationRules with
the authentication ``Policy`` kind; Pilotfish compares them with PeerAuthentication."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import (
    as_dict,
    as_list,
    as_str,
    cluster_domain,
    lookup_destination,
    root_namespace,
    selector_matches,
    str_map,
    to_fqdn,
    workload_selector,
)

MTLS_MODES = ("STRICT", "PERMISSIVE", "DISABLE")


def _mode(pa: Obj) -> str:
    mode = as_str(as_dict(pa.spec.get("mtls")).get("mode")).upper()
    return mode if mode in MTLS_MODES else ""


def effective_peer_auth(ctx: Context, ns: str, labels: dict[str, str]) -> tuple[str, Obj | None]:
    """The mTLS mode a workload accepts and the PeerAuthentication deciding it: a workload
    policy, else the namespace's, else the mesh's (root namespace); PERMISSIVE by default."""
    root = root_namespace(ctx)
    workload: Obj | None = None
    namespace: Obj | None = None
    mesh: Obj | None = None
    for pa in ctx.all("PeerAuthentication"):
        sel = workload_selector(pa)
        if pa.ns == ns and sel:
            if selector_matches(sel, labels) and _mode(pa) and workload is None:
                workload = pa
        elif pa.ns == ns and not sel:
            namespace = namespace or pa
        elif pa.ns == root and not sel:
            mesh = mesh or pa
    for pa in (workload, namespace, mesh):
        if pa is not None and _mode(pa):
            return _mode(pa), pa
    return "PERMISSIVE", None


def _dr_modes(dr: Obj) -> list[tuple[str, tuple]]:
    policy = as_dict(dr.spec.get("trafficPolicy"))
    out = []
    mode = as_str(as_dict(policy.get("tls")).get("mode")).upper()
    if mode:
        out.append((mode, ("spec", "trafficPolicy", "tls", "mode")))
    for i, pls in enumerate(as_list(policy.get("portLevelSettings"))):
        pmode = as_str(as_dict(as_dict(pls).get("tls")).get("mode")).upper()
        if pmode:
            out.append((pmode, ("spec", "trafficPolicy", "portLevelSettings", i, "tls", "mode")))
    return out


@analyzer(
    "auth.MTLSAnalyzer",
    "Checks that DestinationRule TLS modes agree with the PeerAuthentication of their hosts",
    ("IST0113",),
    pilotfish=True,
)
def mtls_conflicts(ctx: Context) -> None:
    if not ctx.all("PeerAuthentication"):
        return
    domain = cluster_domain(ctx)
    for dr in ctx.all("DestinationRule"):
        modes = [
            (mode, path) for mode, path in _dr_modes(dr) if mode in ("DISABLE", "ISTIO_MUTUAL")
        ]
        if not modes:
            continue
        host = as_str(dr.spec.get("host"))
        rec = lookup_destination(ctx, dr.ns, dr.spec.get("exportTo"), host)
        if rec is None or rec.obj.key != "Service":
            continue
        svc = rec.obj
        sel = str_map(svc.spec.get("selector"))
        if not sel:
            continue
        servers = {}
        for pod in ctx.all("Pod"):
            if pod.ns == svc.ns and selector_matches(sel, pod.labels):
                mode, pa = effective_peer_auth(ctx, pod.ns, pod.labels)
                if pa is not None:
                    servers.setdefault(id(pa), (mode, pa))
        fqdn = to_fqdn(svc.ns, svc.name, domain)
        for dr_mode, path in modes:
            wants_mtls = dr_mode == "ISTIO_MUTUAL"
            for mode, pa in servers.values():
                if (wants_mtls and mode == "DISABLE") or (not wants_mtls and mode == "STRICT"):
                    ctx.report(
                        m("MTLSPolicyConflict"),
                        dr,
                        fqdn,
                        dr.full_name,
                        wants_mtls,
                        pa.full_name,
                        mode,
                        path=path,
                    )
