"""``translate(view, registry, node) -> ProxyConfig``: Istio's semantics, as a pure function.

Given one consistent :class:`~pilotfish.controlplane.view.ConfigView`, the
:class:`~pilotfish.registry.Registry` built from it and a proxy's
:class:`~pilotfish.proxy.model.Node`, return the proxy's complete configuration: listeners,
route tables, clusters, endpoints (and, later, secrets). No I/O, no clock, no globals; the
output is sorted (listeners, route tables, clusters and endpoints by name) and the same inputs
always give an equal result. ``version`` is left ``"0"``: the caller (the discovery server)
stamps its own.

The pieces, in the order a proxy's configuration is assembled:

- :mod:`.index` -- per view: VirtualServices (short names expanded, delegates merged),
  DestinationRules consolidated, Sidecars, Gateways;
- :mod:`.sidecar` -- a sidecar's scope (what it sees) and its outbound listeners, route
  tables and clusters;
- :mod:`.inbound` -- a sidecar's inbound listeners and clusters for its own workload;
- :mod:`.gateway` -- a gateway's listeners from its Gateways and their VirtualServices;
- :mod:`.routes` -- VirtualService HTTP routes to proxy routes;
- :mod:`.policy` -- DestinationRule traffic policies to cluster settings;
- :mod:`.security` -- the seam where mTLS and authorization will plug in;
- :mod:`.context` -- the caches that let proxies share what they have in common.

Roles: ``gateway`` nodes get gateway listeners; ``sidecar`` and ``standalone`` nodes get the
sidecar configuration (outbound and inbound).

The full semantics, and where they differ from Istio, are in ``docs/reference/translation.md``.
"""

from __future__ import annotations

import copy
from bisect import bisect_left

from pilotfish.controlplane.translate import security
from pilotfish.controlplane.translate.context import Context, context_for
from pilotfish.controlplane.translate.gateway import gateway_template
from pilotfish.controlplane.translate.inbound import InboundPart, inbound_part
from pilotfish.controlplane.translate.sidecar import Template, outbound_template, scope_for
from pilotfish.controlplane.view import ConfigView
from pilotfish.proxy import model
from pilotfish.registry import Registry

__all__ = ["translate", "Context", "context_for"]


def translate(view: ConfigView, registry: Registry, node: model.Node) -> model.ProxyConfig:
    """The configuration of the proxy ``node`` (see the module docstring)."""
    cx = context_for(view, registry)
    index = cx.index
    selected = index.dr_selector_key(node.namespace, node.labels)
    src_key = index.source_key(node.labels)
    if node.role == "gateway":
        tpl = gateway_template(cx, node, selected, src_key)
        part = InboundPart()
    else:
        sidecar = index.sidecar_for(node.namespace, node.labels)
        scope = scope_for(cx, node.namespace, sidecar)
        tpl = outbound_template(cx, node, scope, selected, src_key)
        part = inbound_part(cx, node, sidecar)
    return _assemble(view, registry, node, tpl, part)


def _insert(shared: list, names: list[str], extra: list, extra_names: list[str]) -> list:
    """``shared`` (sorted by ``names``) with ``extra`` (sorted, contiguous in name order:
    every inbound name starts with ``inbound|``) inserted where they belong."""
    if not extra:
        return list(shared)
    i = bisect_left(names, extra_names[0])
    return shared[:i] + extra + shared[i:]


def _assemble(view: ConfigView, registry: Registry, node: model.Node, tpl: Template,
              part: InboundPart) -> model.ProxyConfig:
    base = tpl.config
    cfg = copy.copy(base)  # shallow: the shared template was validated when it was built
    cfg.node = node
    cfg.listeners = sorted(base.listeners + part.listeners, key=lambda x: x.name)
    cfg.routes = _insert(base.routes, tpl.route_names, part.routes, [r.name for r in part.routes])
    cfg.clusters = _insert(base.clusters, tpl.cluster_names, part.clusters, [c.name for c in part.clusters])
    cfg.endpoints = _insert(base.endpoints, tpl.endpoint_names, part.endpoints, [e.cluster for e in part.endpoints])
    cfg.secrets = security.secrets(view, registry, node)
    return cfg
