"""virtualservice.DestinationRuleAnalyzer: a route or mirror that names a subset needs a
DestinationRule for that host defining the subset (IST0101)."""

from __future__ import annotations

from .core import Context, analyzer
from .messages import m
from .util import as_dict, as_list, as_str, cluster_domain, host_full_name, to_fqdn
from .vs_util import mirror_destinations, route_destinations


def _defined_subsets(ctx: Context) -> set[tuple[str, str, str]]:
    """(namespace, name, subset) for every subset of every DestinationRule, the host resolved
    the way Istio resolves it (short names in the rule's namespace)."""
    domain = cluster_domain(ctx)
    out: set[tuple[str, str, str]] = set()
    for dr in ctx.all("DestinationRule"):
        host = to_fqdn(dr.ns, as_str(dr.spec.get("host")), domain)
        ns, name = host_full_name(dr.ns, host, domain)
        for subset in as_list(dr.spec.get("subsets")):
            out.add((ns, name, as_str(as_dict(subset).get("name"))))
    return out


@analyzer(
    "virtualservice.DestinationRuleAnalyzer",
    "Checks the destination rules associated with each virtual service",
    ("IST0101",),
)
def destination_rules(ctx: Context) -> None:
    defined = _defined_subsets(ctx)
    domain = cluster_domain(ctx)
    missing = m("ReferencedResourceNotFound")
    for vs in ctx.all("VirtualService"):
        checks = [("host", dest, path) for _k, _i, _j, dest, path in route_destinations(vs.spec)]
        checks += [("mirror", dest, path) for _i, dest, path in mirror_destinations(vs.spec)]
        for what, dest, path in checks:
            subset = as_str(dest.get("subset"))
            if not subset:
                continue
            host = as_str(dest.get("host"))
            ns, name = host_full_name(vs.ns, host, domain)
            if (ns, name, subset) not in defined:
                ctx.report(
                    missing, vs, f"{what}+subset in destinationrule", f"{host}+{subset}", path=path
                )
