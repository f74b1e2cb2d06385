"""destinationrule.CaCertificateAnalyzer: TLS origination (SIMPLE or MUTUAL) without
``caCertificates`` does not verify the server's certificate (IST0128 for the whole rule,
IST0129 for a port). A ``credentialName`` on a rule with a workload selector supplies the CA."""

from __future__ import annotations

from typing import Any

from .core import Context, analyzer
from .messages import m
from .util import as_dict, as_list, as_str

ORIGINATING_MODES = ("SIMPLE", "MUTUAL")


def _unverified(tls: dict[str, Any], has_selector: bool) -> bool:
    mode = as_str(tls.get("mode")).upper()
    if mode not in ORIGINATING_MODES:
        return False
    if as_str(tls.get("caCertificates")):
        return False
    if as_str(tls.get("credentialName")) and has_selector:
        return False
    # An explicit insecureSkipVerify says the user knows.
    return tls.get("insecureSkipVerify") is not True


def port_text(port: Any) -> str:
    """A PortSelector the way Istio prints it (protobuf text)."""
    number = as_dict(port).get("number")
    return f"number:{number}" if number else ""


@analyzer(
    "destinationrule.CaCertificateAnalyzer",
    "Checks if caCertificates is set when TLS mode is SIMPLE/MUTUAL",
    ("IST0128", "IST0129"),
)
def ca_certificates(ctx: Context) -> None:
    for dr in ctx.all("DestinationRule"):
        spec = dr.spec
        has_selector = isinstance(spec.get("workloadSelector"), dict)
        policy = as_dict(spec.get("trafficPolicy"))
        host = as_str(spec.get("host"))
        tls = as_dict(policy.get("tls"))
        if _unverified(tls, has_selector):
            ctx.report(
                m("NoServerCertificateVerificationDestinationLevel"),
                dr,
                dr.full_name,
                dr.ns,
                as_str(tls.get("mode")).upper(),
                host,
                path=("spec", "trafficPolicy", "tls", "mode"),
            )
        for i, pls in enumerate(as_list(policy.get("portLevelSettings"))):
            pls = as_dict(pls)
            ptls = as_dict(pls.get("tls"))
            if _unverified(ptls, has_selector):
                ctx.report(
                    m("NoServerCertificateVerificationPortLevel"),
                    dr,
                    dr.full_name,
                    dr.ns,
                    as_str(ptls.get("mode")).upper(),
                    host,
                    port_text(pls.get("port")),
                    path=("spec", "trafficPolicy", "portLevelSettings", i, "tls", "mode"),
                )
