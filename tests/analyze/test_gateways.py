"""Gateway analyzers: workload and ports, conflicts, duplicate certificates, credentials."""

from __future__ import annotations

import base64
import calendar

from pilotfish.analyze.certs import CertError, certificate_validity, check_certificate_pem

from .conftest import pairs, run

NOW = float(calendar.timegm((2026, 1, 1, 0, 0, 0, 0, 0, 0)))


def gw(
    name: str,
    ns: str = "default",
    selector: str = "{istio: ingressgateway}",
    port: int = 80,
    hosts: str = '["*"]',
    tls: str = "",
) -> str:
    return f"""
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {selector}
  servers:
  - port: {{number: {port}, name: p, protocol: HTTP}}
    hosts: {hosts}
    {tls}
"""


def test_gateway_selects_no_workload_and_port_not_on_service():
    msgs = run(
        gw("nobody", selector="{istio: typo}") + gw("odd-port", port=8004) + gw("ok", port=8080),
        "gateway.IngressGatewayPortAnalyzer",
    )
    assert pairs(msgs) == {
        ("IST0101", "Gateway default/nobody"): 1,
        ("IST0162", "Gateway default/odd-port"): 1,
    }
    odd = next(m for m in msgs if m.code == "IST0162")
    assert "(port 8004)" in odd.text and "(Pod selector istio=ingressgateway)" in odd.text


def test_gateway_workload_checks_need_known_workloads():
    # A file set without any workload says nothing about gateway pods (as istioctl without a cluster).
    assert (
        run(
            gw("nobody", selector="{istio: typo}"),
            "gateway.IngressGatewayPortAnalyzer",
            workloads_known=None,
        )
        == []
    )


def test_conflicting_gateways():
    msgs = run(
        gw("a", hosts="[foo.example.com]")
        + gw("b", hosts="[foo.example.com, bar.example.com]")
        + gw("c", port=443, hosts="[foo.example.com]"),
        "gateway.ConflictingGatewayAnalyzer",
    )
    assert pairs(msgs) == {("IST0145", "Gateway default/a"): 1, ("IST0145", "Gateway default/b"): 1}
    a = next(m for m in msgs if m.resource == "Gateway default/a")
    assert (
        a.text
        == "Conflict with gateways default/b (workload selector istio=ingressgateway, port 80, hosts foo.example.com)."
    )


def test_duplicate_certificate():
    tls = "tls: {mode: SIMPLE, credentialName: wildcard}"
    msgs = run(
        gw("a", hosts="[a.example.com]", port=443, tls=tls)
        + gw("b", hosts="[b.example.com]", port=443, tls=tls)
        + gw(
            "narrow",
            selector="{istio: ingressgateway, tier: internal}",
            hosts="[c.example.com]",
            port=443,
            tls=tls,
        ),
        "gateway.CertificateAnalyzer",
    )
    # Each gateway is reported once per other gateway whose workloads include its own: "narrow"
    # selects a subset of the pods, so a and b share with it, but it does not share with them.
    assert pairs(msgs) == {("IST0138", "Gateway default/a"): 2, ("IST0138", "Gateway default/b"): 2}
    assert "Duplicate certificate in multiple gateways [default/a default/b]" in {
        m.text[:64] for m in msgs
    }


# -- credentials -------------------------------------------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def fake_certificate(not_before: str, not_after: str) -> bytes:
    """A certificate-shaped DER (no real keys or signature: only its structure is read)."""
    seq = lambda *parts: _der(0x30, b"".join(parts))  # noqa: E731
    alg = seq(_der(0x06, b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b"), _der(0x05, b""))
    name = seq(_der(0x31, seq(_der(0x06, b"\x55\x04\x03"), _der(0x0C, b"test"))))
    validity = seq(_der(0x17, not_before.encode()), _der(0x17, not_after.encode()))
    spki = seq(alg, _der(0x03, b"\x00" + b"\x01" * 16))
    tbs = seq(_der(0xA0, _der(0x02, b"\x02")), _der(0x02, b"\x01"), alg, name, validity, name, spki)
    return seq(tbs, alg, _der(0x03, b"\x00" + b"\x02" * 16))


def pem(der: bytes) -> bytes:
    body = base64.b64encode(der).decode()
    return ("-----BEGIN CERTIFICATE-----\n" + body + "\n-----END CERTIFICATE-----\n").encode()


def test_certificate_reading():
    der = fake_certificate("250101000000Z", "270101000000Z")
    nb, na = certificate_validity(der)
    assert nb < NOW < na
    check_certificate_pem(pem(der), NOW)
    for bad in (b"hush hush", pem(b"\x30\x03\x02\x01\x00")):
        try:
            check_certificate_pem(bad, NOW)
        except CertError:
            pass
        else:  # pragma: no cover
            raise AssertionError(bad)
    expired = pem(fake_certificate("200101000000Z", "210101000000Z"))
    try:
        check_certificate_pem(expired, NOW)
    except CertError as e:
        assert "expired" in str(e)


def secret(name: str, data: dict[str, bytes], ns: str = "istio-system") -> str:
    items = "".join(f"\n  {k}: {base64.b64encode(v).decode()}" for k, v in data.items())
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {ns}}}
type: kubernetes.io/tls
data:{items}
"""


def test_gateway_credentials():
    good = pem(fake_certificate("250101000000Z", "270101000000Z"))
    old = pem(fake_certificate("200101000000Z", "210101000000Z"))
    cfg = (
        secret("good", {"tls.crt": good, "tls.key": b"k"})
        + secret("old", {"tls.crt": old, "tls.key": b"k"})
        + secret("nokey", {"tls.crt": good})
        + secret("generic", {"cert": good, "key": b"k"})
        + secret("elsewhere", {"tls.crt": good, "tls.key": b"k"}, ns="default")
    )
    for name in ("good", "old", "nokey", "generic", "elsewhere", "missing"):
        cfg += gw(f"gw-{name}", port=443, tls=f"tls: {{mode: SIMPLE, credentialName: {name}}}")
    msgs = run(cfg, "gateway.SecretAnalyzer", now=NOW)
    assert pairs(msgs) == {
        ("IST0161", "Gateway default/gw-old"): 1,
        ("IST0161", "Gateway default/gw-nokey"): 1,
        ("IST0101", "Gateway default/gw-elsewhere"): 1,
        ("IST0101", "Gateway default/gw-missing"): 1,
    }
    old_msg = next(m for m in msgs if m.resource.endswith("gw-old"))
    assert old_msg.text == (
        "The credential referenced by the Gateway gw-old in namespace istio-system is invalid, "
        "which can cause the traffic not to work as expected."
    )
