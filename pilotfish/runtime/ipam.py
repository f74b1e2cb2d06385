"""ClusterIPs, the way the Kubernetes API server hands them out, and the store that does it.

A Service applied without ``spec.clusterIP`` gets one from the service CIDR when it is
stored, as the API server's allocator does. The address is a function of the service's
namespace and name (a hash into the range, probing past addresses in use), so that it stays
the same when the Service is applied again, and usually even when it is deleted and created
again, or when the state directory is started afresh.

:class:`MeshStore` is the config store with the API server's two write-time rules the mesh
needs:

- **ClusterIP allocation.** A Service without ``clusterIP`` keeps the address it already has,
  else gets a new one; ``clusterIP: None`` (headless) and ``type: ExternalName`` get none.
  Because the stored object and the re-applied document then agree, a re-apply of the same
  file reports ``unchanged``, as ``kubectl apply`` does.
- **Status is the runtime's.** A document applied without ``status`` keeps the stored status
  (Kubernetes' status subresource: ``kubectl apply`` never touches it); the runtime writes
  status by applying documents that carry it.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Any

from pilotfish.api.kinds import lookup
from pilotfish.api.loader import Resource
from pilotfish.config import Store

__all__ = ["ClusterIPAllocator", "MeshStore", "DEFAULT_SERVICE_CIDR"]

DEFAULT_SERVICE_CIDR = "10.96.0.0/16"


class ClusterIPAllocator:
    """Addresses of a CIDR for Services. The network address, the first address (Kubernetes
    gives it to the ``kubernetes`` Service) and the broadcast address are never handed out."""

    def __init__(self, cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        net = ipaddress.ip_network(cidr, strict=False)
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(f"service CIDR {cidr}: only IPv4 is supported")
        if net.num_addresses < 8:
            raise ValueError(f"service CIDR {cidr}: too small")
        self.network = net
        self._first = int(net.network_address) + 2
        self._size = net.num_addresses - 3

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.network
        except ValueError:
            return False

    def allocate(self, namespace: str, name: str, used: set[str]) -> str:
        """The address for ``namespace/name``: its hashed slot, or the next free one."""
        h = int.from_bytes(hashlib.sha256(f"{namespace}/{name}".encode()).digest()[:8], "big")
        start = h % self._size
        for i in range(self._size):
            ip = str(ipaddress.IPv4Address(self._first + (start + i) % self._size))
            if ip not in used:
                return ip
        raise RuntimeError(f"service CIDR {self.network} is full ({self._size} addresses)")


def _wants_cluster_ip(spec: dict[str, Any]) -> bool:
    if spec.get("type") == "ExternalName":
        return False
    ip = spec.get("clusterIP")
    return ip in (None, "")


class MeshStore(Store):
    """The config store, plus ClusterIP allocation and status preservation (see the module)."""

    def __init__(self, *args: Any, service_cidr: str = DEFAULT_SERVICE_CIDR, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allocator = ClusterIPAllocator(service_cidr)

    def apply(self, resources: Iterable[Resource | dict[str, Any]], *, dry_run: bool = False):  # type: ignore[override]
        docs = [r if isinstance(r, Resource) else Resource(r) for r in resources]
        with self._lock:  # the store's own (re-entrant) lock: allocation and commit are atomic
            used = self._used_ips()
            out = [self._admit(r, used) for r in docs]
            return super().apply(out, dry_run=dry_run)

    def write_runtime(self, upserts: list[Resource], statuses: list[tuple[str, str | None, str, dict[str, Any]]],
                      deletes: list[tuple[str, str]]) -> None:
        """The runtime's writes, as at most two change sets: ``upserts`` (whole objects the
        runtime owns: its Pods), ``statuses`` (``(kind, namespace, name, status)``: the status
        of an object the user owns, read and written under the store's lock so that a
        concurrent ``apply`` is never undone) and ``deletes`` (Pods, by namespace and name)."""
        with self._lock:
            docs = list(upserts)
            for kind, ns, name, status in statuses:
                so = self.get(kind, ns, name)
                if so is None or so.data.get("status") == status:
                    continue
                data = dict(so.data)
                data["status"] = status
                docs.append(Resource(data, so.file, so.line))
            if docs:
                Store.apply(self, docs)
            gone = [Resource({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}})
                    for ns, name in deletes if self.get("Pod", ns, name) is not None]
            if gone:
                self.delete_resources(gone)

    # ------------------------------------------------------------------ helpers

    def _used_ips(self) -> set[str]:
        used: set[str] = set()
        for so in self.list("Service"):
            spec = so.data.get("spec") or {}
            for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
                if isinstance(ip, str) and ip and ip != "None":
                    used.add(ip)
        return used

    def _admit(self, res: Resource, used: set[str]) -> Resource:
        data = res.data
        if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
            return res
        group = res.group
        kind = res.kind
        name = res.name
        if not kind or not name:
            return res
        info = lookup(group, kind)
        if info is None or info.model is None:
            return res  # the store skips it (with a warning)
        ns = (res.namespace or self.default_namespace) if info.namespaced else None
        old = self.get(info, ns, name)
        changed: dict[str, Any] | None = None
        if old is not None and "status" not in data and old.data.get("status") is not None:
            changed = dict(data)
            changed["status"] = copy.deepcopy(old.data["status"])
        if kind == "Service" and not group and isinstance(data.get("spec"), dict):
            spec = data["spec"]
            if _wants_cluster_ip(spec):
                ip = None
                if old is not None:
                    ospec = old.data.get("spec") or {}
                    oip = ospec.get("clusterIP")
                    if isinstance(oip, str) and oip and oip != "None":
                        ip = oip
                if ip is None:
                    ip = self.allocator.allocate(ns or "default", name, used)
                used.add(ip)
                changed = dict(changed or data)
                spec = dict(spec)
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
                changed["spec"] = spec
        if changed is None:
            return res
        return Resource(changed, res.file, res.line, dict(res.extra))
