"""Just enough X.509 reading to tell whether a gateway credential holds a usable certificate:
PEM decoding and the validity period of the first certificate (a small DER walk, no crypto)."""

from __future__ import annotations

import base64
import binascii
import calendar
import re

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.S)


class CertError(ValueError):
    pass


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    out = []
    for m in _PEM.finditer(data):
        body = re.sub(rb"\s+", b"", m.group(2))
        try:
            out.append((m.group(1).decode(), base64.b64decode(body, validate=True)))
        except (binascii.Error, ValueError):
            raise CertError("pem decode failed") from None
    return out


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``pos``."""
    if pos + 2 > len(der):
        raise CertError("truncated DER")
    tag = der[pos]
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(der):
            raise CertError("bad DER length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(der):
        raise CertError("truncated DER")
    return tag, pos, end


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, vs, ve = _tlv(der, pos)
        out.append((tag, vs, ve))
        pos = ve
    if pos != end:
        raise CertError("malformed DER")
    return out


def _time(tag: int, raw: bytes) -> float:
    text = raw.decode("ascii")
    if not text.endswith("Z"):
        raise CertError("unsupported time format")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        yy = int(text[0:2])
        year = 1900 + yy if yy >= 50 else 2000 + yy
        rest = text[2:-1]
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        year = int(text[0:4])
        rest = text[4:-1]
    else:
        raise CertError("not a time")
    month, day, hour, minute = int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8])
    second = int(rest[8:10]) if len(rest) >= 10 else 0
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def certificate_validity(der: bytes) -> tuple[float, float]:
    """(notBefore, notAfter) as epoch seconds of a DER certificate; CertError if it is not one."""
    tag, s, e = _tlv(der, 0)
    if tag != 0x30 or e != len(der):
        raise CertError("not a certificate")
    parts = _children(der, s, e)
    if len(parts) != 3 or parts[0][0] != 0x30 or parts[1][0] != 0x30 or parts[2][0] != 0x03:
        raise CertError("not a certificate")
    tbs = _children(der, parts[0][1], parts[0][2])
    i = 1 if tbs and tbs[0][0] == 0xA0 else 0  # optional explicit version
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(tbs) < i + 6 or tbs[i][0] != 0x02:
        raise CertError("not a certificate")
    vtag, vs, ve = tbs[i + 3]
    if vtag != 0x30:
        raise CertError("not a certificate")
    times = _children(der, vs, ve)
    if len(times) != 2:
        raise CertError("not a certificate")
    return _time(times[0][0], der[times[0][1] : times[0][2]]), _time(
        times[1][0], der[times[1][1] : times[1][2]]
    )


def check_certificate_pem(data: bytes, now: float) -> None:
    """Raise CertError unless ``data`` starts with a PEM certificate valid at ``now``."""
    blocks = [b for b in pem_blocks(data) if b[0] == "CERTIFICATE"]
    if not blocks:
        raise CertError("pem decode failed")
    for _, der in blocks:
        not_before, not_after = certificate_validity(der)
        if now < not_before or now > not_after:
            raise CertError("certificate is expired or not yet valid")
