"""The security seam: where mutual TLS and authorization will plug into translation.

Today these functions return nothing (or pass DestinationRule TLS settings through); the proxy
does not do TLS yet (``docs/differences.md``). The security issue fills them in:

- :func:`upstream_tls`: the client TLS of an outbound cluster. Istio's rules to implement:
  a DestinationRule ``tls`` wins; otherwise *auto mTLS* uses ``ISTIO_MUTUAL`` when the
  destination's workloads run a sidecar and its PeerAuthentication does not DISABLE mTLS.
  It is called once per (service, port, subset, DestinationRule) and its result is shared by
  every proxy, so it must not depend on the client proxy (certificates are referenced by
  name, e.g. ``default``, and delivered as ``secrets``).
- :func:`inbound_policy`: per inbound port, the PeerAuthentication mode (STRICT /
  PERMISSIVE / DISABLE) and the AuthorizationPolicy / RequestAuthentication rules that apply
  to the workload. Returns None until the proxy model has fields for them.
- :func:`secrets`: the workload certificate, key and trust roots for the proxy's identity
  (``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``), from the CA.

Keeping these in one module means the rest of translation stays unchanged when security
arrives: clusters already carry ``tls``, listeners are built in one place per direction.
"""

from __future__ import annotations

from typing import Any

from pilotfish.api.types import networking as net
from pilotfish.proxy import model
from pilotfish.registry import Service

__all__ = ["upstream_tls", "inbound_policy", "secrets"]


def upstream_tls(service: Service, tls: net.ClientTLSSettings | None) -> model.UpstreamTls | None:
    """``Cluster.tls`` for a DestinationRule ``tls`` block (passed through; no auto mTLS yet)."""
    if tls is None or tls.mode == "DISABLE":
        return None
    return model.UpstreamTls(
        mode=tls.mode,
        sni=tls.sni or None,
        secret=tls.credential_name or None,
        subject_alt_names=list(tls.subject_alt_names),
    )


def inbound_policy(view: Any, registry: Any, node: model.Node, port: int) -> None:
    """PeerAuthentication / AuthorizationPolicy for one inbound port: not yet."""
    return None


def secrets(view: Any, registry: Any, node: model.Node) -> list[model.Secret]:
    """The proxy's certificates: none yet."""
    return []
