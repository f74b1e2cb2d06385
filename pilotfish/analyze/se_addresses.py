"""serviceentry.Analyzer: a ServiceEntry with TCP (or unspecified protocol) ports needs
``addresses``, since TCP traffic is matched by destination IP; unless the mesh allocates
addresses itself (DNS capture with auto-allocation) or one was allocated (IST0134)."""

from __future__ import annotations

from .core import Context, analyzer
from .messages import m
from .util import as_dict, as_list, as_str


def auto_allocates(mesh: dict) -> bool:
    meta = as_dict(as_dict(mesh.get("defaultConfig")).get("proxyMetadata"))
    if as_str(meta.get("ISTIO_META_DNS_CAPTURE")) != "true":
        return False
    return "true" in (
        as_str(meta.get("ISTIO_META_DNS_AUTO_ALLOCATE")),
        as_str(meta.get("PILOT_ENABLE_IP_AUTOALLOCATE")),
    )


@analyzer(
    "serviceentry.Analyzer",
    "Checks the validity of ServiceEntry",
    ("IST0134",),
)
def service_entry_addresses(ctx: Context) -> None:
    if auto_allocates(ctx.mesh):
        return
    for se in ctx.all("ServiceEntry"):
        if as_list(se.spec.get("addresses")) or as_list(se.status.get("addresses")):
            continue
        for i, port in enumerate(as_list(se.spec.get("ports"))):
            proto = as_str(as_dict(port).get("protocol"))
            if proto == "" or proto.upper() == "TCP":
                ctx.report(m("ServiceEntryAddressesRequired"), se, path=("spec", "ports", i))
