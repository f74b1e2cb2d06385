"""Per-request telemetry: where Istio's standard metrics (and, later, spans) plug in.

Every finished request is handed to each sink in ``Proxy.sinks`` (see ``Proxy.record``);
a sink is any callable taking the finished :class:`~pilotfish.proxy.stream.Stream`. To stay
cheap on the hot path a sink only does dictionary arithmetic on a small tuple key; label
strings are built once per distinct key, when metrics are scraped, never per request.

:class:`IstioMetrics` keeps Istio's standard HTTP metrics, rendered on the admin endpoint's
``/stats/prometheus`` with Istio's names and labels:

- ``istio_requests_total`` (counter)
- ``istio_request_duration_milliseconds`` (histogram, Istio's default buckets)

Labels come from the node (the proxy's own workload) and from the destination cluster's name
(``outbound|9080|v1|reviews.default.svc.cluster.local``) and endpoint labels. Peer metadata
exchange (what Istio uses to learn the *other* side's workload) is not implemented yet, so
the peer's workload labels are ``unknown`` where only the peer could tell.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from pilotfish.proxy import model

# Istio's default duration buckets (milliseconds)
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
           300000, 600000, 1800000, 3600000)


def _parse_cluster(name: str) -> tuple[str, str, str, str]:
    """``outbound|9080|v1|reviews.default.svc.cluster.local`` -> (direction, port, subset, host)."""
    parts = name.split("|")
    if len(parts) == 4:
        return parts[0], parts[1], parts[2], parts[3]
    return "", "", "", name


class IstioMetrics:
    def __init__(self, node: model.Node) -> None:
        self.node = node
        self.series: dict[tuple, list[Any]] = {}

    def __call__(self, s: Any) -> None:
        direction = s.conn.hcm.traffic_direction
        host = s.host
        version = host.labels.get("version", "") if host is not None and host.labels else ""
        key = (direction, s.cluster_name, version, s.status, s.flags_str())
        row = self.series.get(key)
        if row is None:
            # count, duration sum, bucket counts
            row = self.series[key] = [0, 0.0, [0] * (len(BUCKETS) + 1)]
        ms = s.elapsed() * 1000.0
        row[0] += 1
        row[1] += ms
        row[2][bisect_left(BUCKETS, ms)] += 1

    def _labels(self, key: tuple) -> str:
        direction, cluster, version, status, flags = key
        node = self.node
        _, _, subset, dhost = _parse_cluster(cluster or "")
        me_app = node.canonical_service or node.labels.get("app") or node.workload_name or node.name
        me_ver = node.canonical_revision or node.labels.get("version", "unknown")
        me_wl = node.workload_name or node.name
        if direction == "INBOUND":
            reporter = "destination"
            src = ("unknown", "unknown", "unknown", "unknown")
            dst_svc = dhost if dhost and "." in dhost else f"{me_app}.{node.namespace}.svc.cluster.local"
            dst = (me_wl, node.namespace, me_app, me_ver)
        else:
            reporter = "source"
            src = (me_wl, node.namespace, me_app, me_ver)
            dns = dhost.split(".")
            dst_ns = dns[1] if len(dns) > 2 else "unknown"
            dst = ("unknown", dst_ns, dns[0] or "unknown", version or subset or "unknown")
            dst_svc = dhost or "unknown"
        pairs = [
            ("reporter", reporter),
            ("source_workload", src[0]), ("source_workload_namespace", src[1]),
            ("source_canonical_service", src[2]), ("source_canonical_revision", src[3]),
            ("source_app", src[2]), ("source_version", src[3]),
            ("destination_workload", dst[0]), ("destination_workload_namespace", dst[1]),
            ("destination_service", dst_svc), ("destination_service_name", dst_svc.split(".")[0]),
            ("destination_service_namespace", dst[1]),
            ("destination_canonical_service", dst[2]), ("destination_canonical_revision", dst[3]),
            ("destination_app", dst[2]), ("destination_version", dst[3]),
            ("destination_cluster", "Kubernetes"), ("source_cluster", "Kubernetes"),
            ("request_protocol", "http"), ("response_code", str(status)),
            ("response_flags", flags), ("connection_security_policy", "unknown"),
            ("grpc_response_status", ""),
        ]
        return ",".join(f'{k}="{v}"' for k, v in pairs)

    def render(self) -> str:
        if not self.series:
            return ""
        out = ["# TYPE istio_requests_total counter"]
        labels = {k: self._labels(k) for k in self.series}
        for k, row in self.series.items():
            out.append(f"istio_requests_total{{{labels[k]}}} {row[0]}")
        out.append("# TYPE istio_request_duration_milliseconds histogram")
        for k, row in self.series.items():
            lb = labels[k]
            cum = 0
            for le, n in zip((*BUCKETS, "+Inf"), row[2], strict=True):
                cum += n
                out.append(f'istio_request_duration_milliseconds_bucket{{{lb},le="{le}"}} {cum}')
            out.append(f"istio_request_duration_milliseconds_sum{{{lb}}} {row[1]:.3f}")
            out.append(f"istio_request_duration_milliseconds_count{{{lb}}} {row[0]}")
        return "\n".join(out) + "\n"
