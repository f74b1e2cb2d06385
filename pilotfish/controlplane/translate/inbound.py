"""A sidecar's inbound side: traffic for its own workload.

The inbound ports are the target ports of every service port whose service selects the
workload's labels (Kubernetes Services of its namespace, MESH_INTERNAL ServiceEntries with a
workloadSelector). A named ``targetPort`` is looked up among the pod's container ports (the
pod is found by the node's name and namespace, else by its address); a port that cannot be
resolved is left out. When several services share a target port, the first by host name
decides its protocol. Each port gets:

- a cluster ``inbound|<port>||`` (STATIC) whose one endpoint is the application:
  ``127.0.0.1:<port>`` in REDIRECT mode, ``127.0.0.1:<node.app_ports[port]>`` (default: the
  same port) in NONE mode; the Sidecar's ``inboundConnectionPool`` sets its limits;
- HTTP: a route table named like the cluster with one virtual host ``inbound|http|<port>``
  (``*``) and one route to the cluster, no timeout, and Istio's inbound retry policy (2
  retries on ``reset-before-request``); TCP: a TCP proxy to the cluster.

Listeners: REDIRECT mode has ``virtualInbound`` on 15006 (``use_original_dst``) with one chain
per port (``destination_port``) and a default chain passing anything else through to its
original destination (``InboundPassthroughCluster``). NONE mode has one listener per port,
``<node.ips[0]>_<port>``, bound on the workload's address.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pilotfish.controlplane.translate import security
from pilotfish.controlplane.translate.context import INBOUND_PASSTHROUGH, Context
from pilotfish.controlplane.translate.policy import Policy, cluster_settings
from pilotfish.controlplane.view import Entry
from pilotfish.proxy import model
from pilotfish.registry import Service, ServicePort, Workload
from pilotfish.registry.registry import resolve_target_port

__all__ = ["InboundPart", "inbound_part"]

_INBOUND_RETRY = model.RetryPolicy(attempts=2, retry_on=["reset-before-request"], retriable_status_codes=[])
_RESERVED = frozenset({15000, 15001, 15006})


@dataclass(eq=False)
class InboundPart:
    listeners: list[model.Listener] = field(default_factory=list)
    routes: list[model.RouteConfiguration] = field(default_factory=list)
    clusters: list[model.Cluster] = field(default_factory=list)
    endpoints: list[model.ClusterEndpoints] = field(default_factory=list)


def _workload(cx: Context, node: model.Node) -> Workload | None:
    w = cx.registry.workload(node.namespace, node.name)
    if w is not None:
        return w
    for ip in node.ips:
        for w in cx.registry.workloads_at(ip):
            if w.namespace == node.namespace:
                return w
    return None


def inbound_part(cx: Context, node: model.Node, sidecar: Entry | None) -> InboundPart:
    pod = _workload(cx, node)
    key = (node.namespace, frozenset(node.labels.items()), node.interception,
           node.ips[0] if node.ips and node.interception == "NONE" else None,
           frozenset(node.app_ports.items()) if node.interception == "NONE" else None,
           pod.name if pod is not None else None, sidecar.key if sidecar is not None else None)
    return cx.cached(cx.inbound, key, lambda: _build(cx, node, pod, sidecar))


def _build(cx: Context, node: model.Node, pod: Workload | None, sidecar: Entry | None) -> InboundPart:
    part = InboundPart()
    redirect = node.interception == "REDIRECT"
    services = cx.registry.services_selecting(node.namespace, node.labels)
    ports: dict[int, tuple[Service, ServicePort]] = {}
    for svc in sorted(services, key=lambda s: s.hostname):
        for sp in svc.ports:
            if sp.protocol == "UDP":
                continue
            tp = resolve_target_port(sp, pod)
            if tp is None or not 1 <= tp <= 65535:
                continue
            ports.setdefault(tp, (svc, sp))
    pool = None
    per_port_pool: dict[int, object] = {}
    if sidecar is not None:
        pool = sidecar.obj.spec.inbound_connection_pool
        for ing in sidecar.obj.spec.ingress:
            if ing.connection_pool is not None and ing.port.number:
                per_port_pool[ing.port.number] = ing.connection_pool
    address = node.ips[0] if node.ips else "0.0.0.0"
    chains: list[model.FilterChain] = []
    for tp in sorted(ports):
        svc, sp = ports[tp]
        if not redirect and tp in _RESERVED:
            continue
        cname = f"inbound|{tp}||"
        app = tp if redirect else node.app_ports.get(tp, tp)
        settings = cluster_settings(Policy(connection_pool=per_port_pool.get(tp, pool)))
        part.clusters.append(model.Cluster(
            name=cname, type="STATIC", lb_policy="ROUND_ROBIN", protocol="tcp" if sp.is_tcp else "http1",
            connect_timeout=settings["connect_timeout"],
            circuit_breakers=settings.get("circuit_breakers", model.CircuitBreakers()),
            metadata={"origin": svc.origin, "service": svc.hostname, "port": sp.port},
        ))
        part.endpoints.append(model.ClusterEndpoints(
            cluster=cname, endpoints=[model.Endpoint(address="127.0.0.1", port=app)]))
        security.inbound_policy(cx.view, cx.registry, node, tp)  # seam: nothing yet
        where = "0.0.0.0" if redirect else address
        if sp.is_tcp:
            chain = model.FilterChain(name=f"{where}_{tp}", destination_port=tp if redirect else None,
                                      tcp=model.TcpProxy(cluster=cname, stat_prefix=cname))
        else:
            part.routes.append(model.RouteConfiguration(name=cname, virtual_hosts=[model.VirtualHost(
                name=f"inbound|http|{tp}", domains=["*"], routes=[model.Route(
                    name="default",
                    route=model.RouteAction(clusters=[model.WeightedCluster(cluster=cname)], retries=_INBOUND_RETRY),
                    origin=svc.origin,
                )])]))
            chain = model.FilterChain(
                name=f"{where}_{tp}", destination_port=tp if redirect else None,
                http=model.HttpConnectionManager(route_config=cname, stat_prefix=f"inbound_{where}_{tp}",
                                                 traffic_direction="INBOUND"),
            )
        if redirect:
            chains.append(chain)
        else:
            part.listeners.append(model.Listener(name=f"{address}_{tp}", address=address, port=tp,
                                                 default_filter_chain=chain))
    if redirect:
        part.listeners.append(model.Listener(
            name="virtualInbound", address="0.0.0.0", port=15006, use_original_dst=True, filter_chains=chains,
            default_filter_chain=model.FilterChain(
                name="InboundPassthroughFilterChain",
                tcp=model.TcpProxy(cluster=INBOUND_PASSTHROUGH, stat_prefix=INBOUND_PASSTHROUGH)),
        ))
    part.listeners.sort(key=lambda x: x.name)
    part.routes.sort(key=lambda x: x.name)
    part.clusters.sort(key=lambda x: x.name)
    part.endpoints.sort(key=lambda x: x.cluster)
    return part
