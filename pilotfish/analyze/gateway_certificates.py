"""gateway.CertificateAnalyzer: the same certificate on several Gateways of the same workload
lets HTTP/2 clients reuse a connection across their hosts and get 404s (IST0138)."""

from __future__ import annotations

from typing import Any

from .core import Context, analyzer
from .messages import m
from .util import as_dict, as_list, as_str, str_map


def same_certificate(a: dict[str, Any], b: dict[str, Any]) -> bool:
    a_cred, b_cred = as_str(a.get("credentialName")), as_str(b.get("credentialName"))
    if a_cred and b_cred:
        return a_cred == b_cred
    if not a_cred and not b_cred:
        a_cert, b_cert = as_str(a.get("serverCertificate")), as_str(b.get("serverCertificate"))
        a_key, b_key = as_str(a.get("privateKey")), as_str(b.get("privateKey"))
        return bool(a_cert) and a_cert == b_cert and bool(a_key) and a_key == b_key
    return False


def _subset(a: dict[str, str], b: dict[str, str]) -> bool:
    return all(b.get(k) == v for k, v in a.items())


@analyzer(
    "gateway.CertificateAnalyzer",
    "Checks a gateway certificate",
    ("IST0138",),
)
def duplicate_certificates(ctx: Context) -> None:
    gateways = ctx.all("Gateway")
    tls = {
        id(gw): [
            as_dict(as_dict(s).get("tls"))
            for s in as_list(gw.spec.get("servers"))
            if isinstance(as_dict(s).get("tls"), dict)
        ]
        for gw in gateways
    }
    for gw in gateways:
        sel = str_map(gw.spec.get("selector"))
        for other in gateways:
            if other is gw:
                continue
            # Another gateway whose workloads include this one's: this selector is a subset of it.
            if sel and not _subset(sel, str_map(other.spec.get("selector"))):
                continue
            for a in tls[id(gw)]:
                for b in tls[id(other)]:
                    if same_certificate(a, b):
                        ctx.report(
                            m("GatewayDuplicateCertificate"),
                            gw,
                            [gw.full_name, other.full_name],
                            path=("metadata", "name"),
                        )
