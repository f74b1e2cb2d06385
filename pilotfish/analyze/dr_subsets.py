"""destinationrule.SubsetSelectPodAnalyzer: a DestinationRule's host must be a known service
(IST0174), and each subset must select at least one pod (IST0173), else requests to it fail
with 503 UH (no healthy upstream)."""

from __future__ import annotations

from .core import Context, analyzer
from .messages import m
from .util import (
    ServiceRecord,
    as_dict,
    as_list,
    as_str,
    lookup_destination,
    selector_matches,
    str_map,
)

TOPOLOGY_LABELS = (
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
)
HOSTNAME_LABEL = "kubernetes.io/hostname"


def endpoint_labels(
    pod_labels: dict[str, str], node_name: str, nodes: dict[str, dict[str, str]]
) -> dict[str, str]:
    """A pod's labels as its endpoint carries them: plus the topology labels of its node."""
    out = dict(pod_labels)
    if not node_name or node_name not in nodes:
        return out
    node = nodes[node_name]
    for key in TOPOLOGY_LABELS:
        if node.get(key):
            out[key] = node[key]
    out[HOSTNAME_LABEL] = node_name
    return out


def _candidates(
    ctx: Context, rec: ServiceRecord, endpoints: dict[int, dict[str, str]]
) -> list[dict[str, str]]:
    """Label sets of the endpoints a subset may pick from: the pods behind a Service (its
    selector, its namespace), the workloads or inline endpoints of a ServiceEntry. When the
    service says nothing about its workloads, every pod (as Istio does)."""
    obj = rec.obj
    pods = ctx.all("Pod")
    if obj.key == "Service":
        sel = str_map(obj.spec.get("selector"))
        if sel:
            return [
                endpoints[id(p)] for p in pods if p.ns == obj.ns and selector_matches(sel, p.labels)
            ]
        return list(endpoints.values())
    if rec.workload_selector:
        out = [
            endpoints[id(p)]
            for p in pods
            if p.ns == obj.ns and selector_matches(rec.workload_selector, p.labels)
        ]
        out += [
            str_map(we.spec.get("labels"))
            for we in ctx.all("WorkloadEntry")
            if we.ns == obj.ns
            and selector_matches(rec.workload_selector, str_map(we.spec.get("labels")))
        ]
        return out
    inline = [str_map(as_dict(e).get("labels")) for e in as_list(obj.spec.get("endpoints"))]
    return inline or list(endpoints.values())


@analyzer(
    "destinationrule.SubsetSelectPodAnalyzer",
    "Checks if pods are selected by subsets in destination rules.",
    ("IST0173", "IST0174"),
)
def subsets_select_pods(ctx: Context) -> None:
    nodes = {n.name: n.labels for n in ctx.all("Node")}
    endpoints = {
        id(p): endpoint_labels(p.labels, as_str(p.spec.get("nodeName")), nodes)
        for p in ctx.all("Pod")
    }
    if not ctx.need_services("host and subset checks"):
        return
    for dr in ctx.all("DestinationRule"):
        host = as_str(dr.spec.get("host"))
        rec = lookup_destination(ctx, dr.ns, dr.spec.get("exportTo"), host)
        if rec is None:
            ctx.report(m("UnknownDestinationRuleHost"), dr, host, path=("spec", "host"))
            continue
        subsets = as_list(dr.spec.get("subsets"))
        if not subsets or not ctx.need_workloads("subset checks"):
            continue
        candidates = _candidates(ctx, rec, endpoints)
        for i, subset in enumerate(subsets):
            subset = as_dict(subset)
            selector = str_map(subset.get("labels"))
            if not any(selector_matches(selector, labels) for labels in candidates):
                ctx.report(
                    m("DestinationRuleSubsetNotSelectPods"),
                    dr,
                    as_str(subset.get("name")),
                    path=("spec", "subsets", i),
                )
