"""gateway.SecretAnalyzer: a Gateway's ``credentialName`` must name a Secret in the namespace
of the gateway workload (IST0101) holding a certificate and key, the certificate readable and
currently valid (IST0161)."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from .certs import CertError, check_certificate_pem
from .core import Context, Obj, analyzer
from .messages import m
from .util import as_dict, as_list, as_str, selector_matches, selector_string, str_map

# (certificate key, private key key) pairs a TLS Secret may use, generic first as Istio reads them.
KEY_PAIRS = (("cert", "key"), ("tls.crt", "tls.key"))


def secret_data(secret: Obj) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for k, v in as_dict(secret.data.get("data")).items():
        try:
            out[str(k)] = base64.b64decode(str(v or ""), validate=False)
        except (binascii.Error, ValueError):
            out[str(k)] = b""
    for k, v in as_dict(secret.data.get("stringData")).items():
        out[str(k)] = str(v or "").encode()
    return out


def credential_problem(secret: Obj, now: float) -> str | None:
    """Why a Secret cannot serve as a gateway credential, or None when it can."""
    data = secret_data(secret)
    cert = None
    for ck, kk in KEY_PAIRS:
        if data.get(ck) and data.get(kk):
            cert = data[ck]
            break
    if cert is None:
        return "no (cert, key) or (tls.crt, tls.key) pair"
    try:
        check_certificate_pem(cert, now)
    except CertError as e:
        return str(e)
    return None


def gateway_workload_namespace(ctx: Context, gw: Obj) -> str | None:
    """The namespace of the workload a Gateway selects (where its credentials are looked up)."""
    sel = str_map(gw.spec.get("selector"))
    for pod in ctx.all("Pod"):
        if selector_matches(sel, pod.labels):
            return pod.ns
    return None


@analyzer(
    "gateway.SecretAnalyzer",
    "Checks a gateway's referenced secrets for correctness",
    ("IST0101", "IST0161"),
)
def gateway_secrets(ctx: Context) -> None:
    if not ctx.need_workloads("credential checks (they need the gateway workload's namespace)"):
        return
    now = ctx.now if ctx.now is not None else time.time()
    for gw in ctx.all("Gateway"):
        ns = gateway_workload_namespace(ctx, gw)
        if not ns:
            sel = selector_string(str_map(gw.spec.get("selector")))
            ctx.report(
                m("ReferencedResourceNotFound"), gw, "selector", sel, path=("spec", "selector")
            )
            continue
        for i, server in enumerate(as_list(gw.spec.get("servers"))):
            tls: dict[str, Any] = as_dict(as_dict(server).get("tls"))
            cn = as_str(tls.get("credentialName"))
            if not cn:
                continue
            path = ("spec", "servers", i, "tls", "credentialName")
            sns, sname = cn.split("/", 1) if "/" in cn else (ns, cn)
            secret = ctx.find("Secret", sns, sname)
            if secret is None:
                ctx.report(m("ReferencedResourceNotFound"), gw, "credentialName", cn, path=path)
                continue
            if credential_problem(secret, now) is not None:
                ctx.report(m("InvalidGatewayCredential"), gw, gw.name, ns, path=path)
