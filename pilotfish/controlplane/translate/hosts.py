"""Host names as Istio reads them: short names, wildcards, precedence, virtual host domains."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = [
    "fqdn",
    "is_wildcard",
    "subset_of",
    "overlaps",
    "most_specific",
    "service_domains",
    "split_ns_host",
]


def _is_ip(h: str) -> bool:
    if not (h[:1].isdigit() or ":" in h):
        return False  # an IPv4 address starts with a digit, an IPv6 one has a colon
    try:
        ipaddress.ip_address(h)
    except ValueError:
        return False
    return True


def fqdn(host: str, namespace: str, suffix: str) -> str:
    """Istio's short-name expansion: a name without a dot (``reviews``) is a Kubernetes
    service of the referring object's namespace (``reviews.default.svc.cluster.local``).
    Names with a dot, ``*`` and IP addresses stay as written (lower-cased)."""
    h = host.strip().lower()
    if not h or h == "*" or "." in h or _is_ip(h):
        return h
    return f"{h}.{namespace}.svc.{suffix}"


def is_wildcard(h: str) -> bool:
    return h.startswith("*")


def subset_of(a: str, b: str) -> bool:
    """Is every host ``a`` names also named by ``b``? (``reviews.x`` ⊆ ``*.x`` ⊆ ``*``)."""
    if b == "*":
        return True
    if b.startswith("*"):
        suffix = b[1:]  # ".example.com"
        if a.startswith("*"):
            return a != "*" and a[1:].endswith(suffix)
        return a.endswith(suffix)
    if a.startswith("*"):
        return False
    return a == b


def overlaps(a: str, b: str) -> bool:
    """Do ``a`` and ``b`` name at least one host in common (wildcards either side)?"""
    return subset_of(a, b) or subset_of(b, a)


def most_specific(host: str, candidates: Iterable[str]) -> str | None:
    """Istio's ``MostSpecificHostMatch``: ``host`` itself if it is a candidate, else the
    longest wildcard candidate that contains it, else None."""
    best: str | None = None
    for c in candidates:
        if c == host:
            return c
        if c.startswith("*") and subset_of(host, c) and (best is None or len(c) > len(best)):
            best = c
    return best


def split_ns_host(value: str, own_namespace: str) -> tuple[str, str]:
    """``ns/host`` (Sidecar egress and Gateway server hosts) -> (namespace, host): ``.`` is
    ``own_namespace``, ``*`` any namespace, ``~`` none; no ``/`` means ``*/host``."""
    if "/" in value:
        ns, host = value.split("/", 1)
    else:
        ns, host = "*", value
    if ns == ".":
        ns = own_namespace
    return ns, host.lower()


def _with_port(names: list[str], port: int) -> list[str]:
    out = []
    for n in names:
        out.append(n)
        out.append(f"{n}:{port}")
    return out


def service_domains(hostname: str, port: int, proxy_namespace: str, suffix: str,
                    addresses: Iterable[str] = ()) -> list[str]:
    """The Host header values a service answers to, as Istio emits them for a sidecar in
    ``proxy_namespace``: the full name, the short forms a Kubernetes resolver accepts
    (``reviews`` only from the same namespace; ``reviews.default`` and ``reviews.default.svc``
    from any), the service addresses; each also with ``:port``."""
    names = [hostname]
    marker = f".svc.{suffix}"
    if hostname.endswith(marker) and not hostname.startswith("*"):
        stem = hostname[: -len(marker)]  # "reviews.default"
        if "." in stem:
            name, ns = stem.split(".", 1)
            if ns == proxy_namespace:
                names += [name, f"{stem}.svc", stem]
            else:
                names += [stem, f"{stem}.svc"]
    for a in addresses:
        if a and "/" not in a and a not in ("0.0.0.0", "::"):
            names.append(f"[{a}]" if ":" in a else a)
    return _with_port(names, port)
