"""Indices over a ConfigView that every translation needs, computed once per view.

- VirtualServices with host names expanded (``reviews`` in ``default`` ->
  ``reviews.default.svc.cluster.local``), gateway references normalized (``mesh`` or
  ``namespace/name``) and ``delegate`` routes merged into their root;
- DestinationRules consolidated per (namespace, host, workload selector), as Istio merges them;
- Sidecars per namespace, Gateways;
- the distinct ``sourceLabels`` selectors of all route matches (part of the cache keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pilotfish.api.types import networking as net
from pilotfish.controlplane.translate.hosts import fqdn, is_wildcard, subset_of
from pilotfish.controlplane.view import ConfigView, Entry

__all__ = ["MeshIndex", "VSInfo", "ConsolidatedDR", "mesh_index", "labels_match"]

MESH = "mesh"


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    for k, v in selector.items():
        if labels.get(k) != v:
            return False
    return True


def gateway_ref(name: str, namespace: str) -> str:
    """``mesh`` stays; ``name`` is ``namespace/name`` of the referring object."""
    if name == MESH or "/" in name:
        return name
    return f"{namespace}/{name}"


# --------------------------------------------------------------------------- VirtualService


@dataclass(eq=False)
class VSInfo:
    entry: Entry
    id: int
    hosts: tuple[str, ...]
    gateways: frozenset[str]
    export_to: frozenset[str]
    #: HTTP routes after delegation, each with the entry that defined it (root or delegate)
    http: list[tuple[net.HTTPRoute, Entry]] = field(default_factory=list)
    tcp: list[net.TCPRoute] = field(default_factory=list)
    #: some match depends on the client (sourceLabels / sourceNamespace)
    sensitive: bool = False

    @property
    def namespace(self) -> str:
        return self.entry.namespace

    @property
    def mesh(self) -> bool:
        return MESH in self.gateways

    def visible(self, namespace: str) -> bool:
        return "*" in self.export_to or namespace in self.export_to

    def __repr__(self) -> str:
        return f"<VS {self.entry.key} hosts={list(self.hosts)}>"


def _norm_dest(d: net.Destination | None, ns: str, suffix: str) -> net.Destination | None:
    if d is None:
        return None
    h = fqdn(d.host, ns, suffix)
    return d if h == d.host else msgspec.structs.replace(d, host=h)


def _norm_match(m: Any, ns: str) -> Any:
    if not m.gateways:
        return m
    return msgspec.structs.replace(m, gateways=[gateway_ref(g, ns) for g in m.gateways])


def _norm_http(r: net.HTTPRoute, ns: str, suffix: str) -> net.HTTPRoute:
    changes: dict[str, Any] = {}
    if r.route:
        changes["route"] = [
            msgspec.structs.replace(d, destination=_norm_dest(d.destination, ns, suffix)) for d in r.route
        ]
    if r.mirror is not None:
        changes["mirror"] = _norm_dest(r.mirror, ns, suffix)
    if r.mirrors:
        changes["mirrors"] = [
            msgspec.structs.replace(m, destination=_norm_dest(m.destination, ns, suffix)) for m in r.mirrors
        ]
    if r.match:
        changes["match"] = [_norm_match(m, ns) for m in r.match]
    if r.delegate is not None and not r.delegate.namespace:
        changes["delegate"] = msgspec.structs.replace(r.delegate, namespace=ns)
    return msgspec.structs.replace(r, **changes) if changes else r


def _norm_tcp(r: net.TCPRoute, ns: str, suffix: str) -> net.TCPRoute:
    return msgspec.structs.replace(
        r,
        route=[msgspec.structs.replace(d, destination=_norm_dest(d.destination, ns, suffix)) for d in r.route],
        match=[_norm_match(m, ns) for m in r.match],
    )


# ---- delegate merging (Istio's mergeHTTPRoute / mergeHTTPMatchRequests)


def _sm_conflict(root: net.StringMatch | None, leaf: net.StringMatch | None) -> bool:
    if root is None or leaf is None:
        return False
    if root.regex and (leaf.regex or leaf.prefix or leaf.exact):
        return True
    if leaf.regex and (root.regex or root.prefix or root.exact):
        return True
    if root.exact:
        if leaf.prefix:
            return True
        if leaf.exact != root.exact:
            return True
    if root.prefix:
        if leaf.prefix and not leaf.prefix.startswith(root.prefix):
            return True
        if leaf.exact and not leaf.exact.startswith(root.prefix):
            return True
    return False


def _match_conflict(root: net.HTTPMatchRequest, leaf: net.HTTPMatchRequest) -> bool:
    for a, b in ((root.uri, leaf.uri), (root.scheme, leaf.scheme), (root.method, leaf.method),
                 (root.authority, leaf.authority)):
        if _sm_conflict(a, b):
            return True
    for k, v in leaf.headers.items():
        if _sm_conflict(root.headers.get(k), v):
            return True
    for k, v in leaf.without_headers.items():
        if _sm_conflict(root.without_headers.get(k), v):
            return True
    for k, v in leaf.query_params.items():
        if _sm_conflict(root.query_params.get(k), v):
            return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    for k, v in leaf.source_labels.items():
        if k in root.source_labels and root.source_labels[k] != v:
            return True
    if root.gateways and leaf.gateways:
        if len(root.gateways) < len(leaf.gateways) or not set(leaf.gateways) <= set(root.gateways):
            return True
    return False


def _merge_match(root: net.HTTPMatchRequest, leaf: net.HTTPMatchRequest) -> net.HTTPMatchRequest:
    name = leaf.name
    if not name:
        name = root.name
    elif root.name:
        name = f"{root.name}-{name}"
    return msgspec.structs.replace(
        leaf,
        name=name,
        uri=leaf.uri or root.uri,
        scheme=leaf.scheme or root.scheme,
        method=leaf.method or root.method,
        authority=leaf.authority or root.authority,
        headers={**root.headers, **leaf.headers},
        without_headers={**root.without_headers, **leaf.without_headers},
        query_params={**root.query_params, **leaf.query_params},
        port=leaf.port or root.port,
        source_labels={**root.source_labels, **leaf.source_labels},
        source_namespace=leaf.source_namespace or root.source_namespace,
        gateways=leaf.gateways or root.gateways,
        stat_prefix=leaf.stat_prefix or root.stat_prefix,
    )


def _merge_matches(root: list, leaf: list) -> list | None:
    """Merged matches, or None when the delegate's matches are not within the root's."""
    if not root:
        return leaf
    if not leaf:
        return root
    out = []
    for sub in leaf:
        found = False
        for r in root:
            if _match_conflict(r, sub):
                continue
            out.append(_merge_match(r, sub))
            found = True
        if not found:
            return None
    return out or None


def merge_delegate_route(root: net.HTTPRoute, leaf: net.HTTPRoute) -> net.HTTPRoute | None:
    """A delegate's route under its root's route: the matches are ANDed (a delegate match
    must fall within a root match, else the route is dropped) and fields the delegate leaves
    unset come from the root."""
    matches = _merge_matches(list(root.match), list(leaf.match))
    if matches is None:
        return None
    name = leaf.name
    if not name:
        name = root.name
    elif root.name:
        name = f"{root.name}-{name}"
    return msgspec.structs.replace(
        leaf,
        match=matches,
        name=name,
        rewrite=leaf.rewrite or root.rewrite,
        direct_response=leaf.direct_response or root.direct_response,
        timeout=leaf.timeout if leaf.timeout is not None else root.timeout,
        retries=leaf.retries if leaf.retries is not None else root.retries,
        fault=leaf.fault or root.fault,
        mirror=leaf.mirror or root.mirror,
        mirror_percent=leaf.mirror_percent if leaf.mirror_percent is not None else root.mirror_percent,
        mirror_percentage=leaf.mirror_percentage or root.mirror_percentage,
        mirrors=leaf.mirrors or root.mirrors,
        cors_policy=leaf.cors_policy or root.cors_policy,
        headers=leaf.headers or root.headers,
        delegate=None,
    )


def _sensitive_match(m: Any) -> bool:
    return bool(m.source_labels or m.source_namespace)


# --------------------------------------------------------------------------- DestinationRule


@dataclass(eq=False)
class ConsolidatedDR:
    """One or more DestinationRules of one namespace for one host (and workload selector),
    merged as Istio does: subsets are concatenated (a repeated subset name is ignored) and
    the top-level trafficPolicy is the first one set."""

    id: int
    host: str
    namespace: str
    selector: dict[str, str] | None
    traffic_policy: net.TrafficPolicy | None
    subsets: list[net.Subset]
    export_to: frozenset[str]
    entries: list[Entry]

    @property
    def origin(self) -> str:
        return self.entries[0].origin

    @property
    def merged_from(self) -> list[str]:
        return [e.origin for e in self.entries[1:]]

    def visible(self, namespace: str) -> bool:
        return "*" in self.export_to or namespace in self.export_to

    def subset(self, name: str) -> net.Subset | None:
        for s in self.subsets:
            if s.name == name:
                return s
        return None

    def __repr__(self) -> str:
        return f"<DR {self.origin} host={self.host}>"


class _HostTable:
    """Host -> value with Istio's most-specific match (exact, then longest wildcard)."""

    def __init__(self) -> None:
        self.exact: dict[str, list[ConsolidatedDR]] = {}
        self.wild: list[str] = []

    def add(self, host: str, value: ConsolidatedDR) -> list[ConsolidatedDR]:
        bucket = self.exact.get(host)
        if bucket is None:
            bucket = self.exact[host] = []
            if is_wildcard(host):
                self.wild.append(host)
        bucket.append(value)
        return bucket

    def lookup(self, host: str) -> list[ConsolidatedDR] | None:
        found = self.exact.get(host)
        if found is not None:
            return found
        best = None
        for w in self.wild:
            if subset_of(host, w) and (best is None or len(w) > len(best)):
                best = w
        return self.exact[best] if best is not None else None


# --------------------------------------------------------------------------- the index


class MeshIndex:
    def __init__(self, view: ConfigView) -> None:
        self.view = view
        self.root = view.root_namespace
        self.suffix = view.domain_suffix
        self._build_virtual_services()
        self._build_destination_rules()
        self.sidecars: dict[str, list[Entry]] = {}
        for e in view.entries("Sidecar"):
            self.sidecars.setdefault(e.namespace, []).append(e)
        self.gateways: list[Entry] = list(view.entries("Gateway"))

    # ---- VirtualServices

    def _build_virtual_services(self) -> None:
        view, suffix = self.view, self.suffix
        infos: list[VSInfo] = []
        by_key: dict[str, VSInfo] = {}
        for i, e in enumerate(view.entries("VirtualService")):
            spec = e.obj.spec
            ns = e.namespace
            hosts = tuple(dict.fromkeys(fqdn(h, ns, suffix) for h in spec.hosts))
            gws = frozenset(gateway_ref(g, ns) for g in spec.gateways) if spec.gateways else frozenset({MESH})
            info = VSInfo(e, i, hosts, gws, view.export_to(e))
            info.http = [(_norm_http(r, ns, suffix), e) for r in spec.http]
            info.tcp = [_norm_tcp(r, ns, suffix) for r in spec.tcp]
            infos.append(info)
            by_key[e.key] = info
        # delegation: a root route naming a delegate is replaced by the delegate's routes
        for info in infos:
            if not info.hosts or not any(r.delegate is not None for r, _ in info.http):
                continue
            out: list[tuple[net.HTTPRoute, Entry]] = []
            for r, e in info.http:
                if r.delegate is None:
                    out.append((r, e))
                    continue
                d = by_key.get(f"{r.delegate.namespace}/{r.delegate.name}")
                if d is None or d.hosts or not d.visible(info.namespace):
                    continue  # Istio drops a route whose delegate is missing or not visible
                for leaf, le in d.http:
                    if leaf.delegate is not None:
                        continue  # one level of delegation only
                    merged = merge_delegate_route(r, leaf)
                    if merged is not None:
                        out.append((merged, le))
            info.http = out
        selectors: dict[frozenset, int] = {}
        for info in infos:
            matches = [m for r, _ in info.http for m in r.match] + [m for r in info.tcp for m in r.match]
            info.sensitive = any(_sensitive_match(m) for m in matches)
            for m in matches:
                if m.source_labels:
                    selectors.setdefault(frozenset(m.source_labels.items()), len(selectors))
        self.virtual_services = infos
        self.vs_by_key = by_key
        #: VirtualServices with hosts bound to sidecars ("mesh"), Istio order
        self.mesh_vs = [v for v in infos if v.hosts and v.mesh]
        #: VirtualServices by the gateway they bind to ("ns/name")
        self.vs_by_gateway: dict[str, list[VSInfo]] = {}
        for v in infos:
            if not v.hosts:
                continue
            for g in sorted(v.gateways):
                if g != MESH:
                    self.vs_by_gateway.setdefault(g, []).append(v)
        self.source_selectors: list[tuple[frozenset, dict[str, str]]] = [
            (s, dict(s)) for s in sorted(selectors, key=selectors.__getitem__)
        ]

    def source_key(self, labels: Mapping[str, str]) -> tuple[int, ...]:
        """Which route ``sourceLabels`` selectors these labels satisfy (a cache key part)."""
        return tuple(i for i, (_, sel) in enumerate(self.source_selectors) if labels_match(sel, labels))

    # ---- DestinationRules

    def _build_destination_rules(self) -> None:
        view, suffix = self.view, self.suffix
        self.dr_local: dict[str, _HostTable] = {}
        self.dr_all: list[ConsolidatedDR] = []
        self.dr_selectors: dict[str, list[ConsolidatedDR]] = {}
        for e in view.entries("DestinationRule"):
            spec = e.obj.spec
            ns = e.namespace
            host = fqdn(spec.host, ns, suffix)
            sel = dict(spec.workload_selector.match_labels) if spec.workload_selector is not None else None
            sel = sel or None
            table = self.dr_local.setdefault(ns, _HostTable())
            merged = False
            for c in table.exact.get(host, ()):
                if c.selector == sel:
                    names = {s.name for s in c.subsets}
                    c.subsets.extend(s for s in spec.subsets if s.name not in names)
                    if c.traffic_policy is None:
                        c.traffic_policy = spec.traffic_policy
                    c.entries.append(e)
                    merged = True
                    break
            if merged:
                continue
            seen: set[str] = set()
            subsets = [s for s in spec.subsets if not (s.name in seen or seen.add(s.name))]
            c = ConsolidatedDR(len(self.dr_all), host, ns, sel, spec.traffic_policy, subsets,
                               view.export_to(e), [e])
            self.dr_all.append(c)
            table.add(host, c)
            if sel is not None:
                self.dr_selectors.setdefault(ns, []).append(c)

    def dr_selector_key(self, namespace: str, labels: Mapping[str, str]) -> frozenset[int]:
        """The workload-selector DestinationRules of ``namespace`` that select ``labels``."""
        return frozenset(
            c.id for c in self.dr_selectors.get(namespace, ()) if labels_match(c.selector or {}, labels)
        )

    def destination_rule(self, proxy_ns: str, host: str, svc_ns: str,
                         selected: frozenset[int]) -> ConsolidatedDR | None:
        """Istio's DestinationRule precedence for a client in ``proxy_ns`` calling ``host``:

        1. a rule in the client's own namespace (whatever its exportTo); among those, one whose
           workloadSelector selects the client (``selected``) wins over one without selector;
        2. a rule in the service's namespace exported to the client's namespace;
        3. a rule in the root namespace exported to the client's namespace.

        At each step the most specific host wins (exact, then the longest wildcard)."""
        table = self.dr_local.get(proxy_ns)
        if table is not None:
            found = table.lookup(host)
            if found:
                pick = _pick(found, selected)
                if pick is not None:
                    return pick
        for owner in (svc_ns, self.root):
            if not owner or owner == proxy_ns:
                continue
            table = self.dr_local.get(owner)
            if table is None:
                continue
            found = table.lookup(host)
            if not found:
                continue
            # the most specific host decides; if its rule is not exported to the client, there
            # is no fallback to a less specific one (Istio's getExportedDestinationRuleFromNamespace)
            for c in found:
                if c.selector is None and c.visible(proxy_ns):
                    return c
        return None

    # ---- Sidecars

    def sidecar_for(self, namespace: str, labels: Mapping[str, str]) -> Entry | None:
        """The Sidecar that applies to a workload: one of its namespace whose workloadSelector
        selects it (the oldest), else its namespace's default (no selector), else the root
        namespace's default (the mesh default)."""
        local = self.sidecars.get(namespace, ())
        for e in local:
            ws = e.obj.spec.workload_selector
            if ws is not None and ws.labels and labels_match(ws.labels, labels):
                return e
        for e in local:
            ws = e.obj.spec.workload_selector
            if ws is None or not ws.labels:
                return e
        if namespace != self.root:
            for e in self.sidecars.get(self.root, ()):
                ws = e.obj.spec.workload_selector
                if ws is None or not ws.labels:
                    return e
        return None


def _pick(found: list[ConsolidatedDR], selected: frozenset[int]) -> ConsolidatedDR | None:
    catch_all = None
    for c in found:
        if c.selector is not None:
            if c.id in selected:
                return c
        elif catch_all is None:
            catch_all = c
    return catch_all


def mesh_index(view: ConfigView) -> MeshIndex:
    return view.memo("translate.index", lambda: MeshIndex(view))
