"""Workload analyzers: sidecar selectors, port names, services per deployment, UID 1337,
injection and annotations."""

from __future__ import annotations

from .conftest import pairs, run

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: default, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: reviews}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-1, namespace: default, labels: {app: ratings}}
spec: {containers: [{name: app, image: ratings}]}
"""


def sidecar(name: str, labels: str | None = None, ns: str = "default") -> str:
    sel = f"\n  workloadSelector: {{labels: {labels}}}" if labels else ""
    return f"""
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {name}, namespace: {ns}}}
spec:{sel}
  egress: [{{hosts: ["./*"]}}]
"""


def test_sidecar_selectors():
    msgs = run(
        PODS
        + sidecar("for-reviews", "{app: reviews}")
        + sidecar("for-v1", "{version: v1}")
        + sidecar("for-nothing", "{app: nothing}")
        + sidecar("ns-1")
        + sidecar("ns-2"),
        "sidecar.SelectorAnalyzer",
    )
    assert pairs(msgs) == {
        ("IST0110", "Sidecar default/for-reviews"): 1,
        ("IST0110", "Sidecar default/for-v1"): 1,
        ("IST0101", "Sidecar default/for-nothing"): 1,
        ("IST0111", "Sidecar default/ns-1"): 1,
        ("IST0111", "Sidecar default/ns-2"): 1,
    }
    conflict = next(m for m in msgs if m.code == "IST0110")
    assert conflict.text == (
        'The Sidecars [for-reviews for-v1] in namespace "default" select the same workload pod '
        '"reviews-1", which can lead to undefined behavior.'
    )


def test_sidecar_selects_deployment_workloads():
    """Pods Pilotfish will create from a Deployment count as workloads."""
    dep = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: app, image: reviews}]}
"""
    assert run(dep + sidecar("for-reviews", "{app: reviews}"), "sidecar.SelectorAnalyzer") == []
    no_standins = run(
        dep + sidecar("for-reviews", "{app: reviews}"),
        "sidecar.SelectorAnalyzer",
        workloads_from_controllers=False,
    )
    assert [m.code for m in no_standins] == ["IST0101"]


def service(name: str, ports: str, ns: str = "default", kind_type: str = "") -> str:
    t = f"\n  type: {kind_type}" if kind_type else ""
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:{t}
  selector: {{app: {name}}}
  ports: {ports}
"""


def test_port_names():
    msgs = run(
        service("named", "[{name: http-web, port: 80}, {name: grpc, port: 81}, {port: 3306}]")
        + service("app-protocol", "[{name: web, port: 80, appProtocol: http}]")
        + service("unnamed", "[{port: 8080, targetPort: 9090}, {name: foo, port: 8081}]")
        + service("system", "[{port: 8080}]", ns="kube-system")
        + service("ext", "[{name: tcp, port: 443}]", kind_type="ExternalName"),
        "service.PortNameAnalyzer",
    )
    assert pairs(msgs) == {
        ("IST0118", "Service default/unnamed"): 2,
        ("IST0150", "Service default/ext"): 1,
    }
    texts = sorted(m.text for m in msgs if m.code == "IST0118")
    assert (
        texts[0]
        == "Port name  (port: 8080, targetPort: 9090) doesn't follow the naming convention of Istio port."
    )
    assert (
        texts[1]
        == "Port name foo (port: 8081, targetPort: 0) doesn't follow the naming convention of Istio port."
    )


DEPLOY = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details, namespace: shop}
spec:
  selector: {matchLabels: {app: details}}
  template:
    metadata: {labels: {app: details}}
    spec: {containers: [{name: details, image: details}]}
"""


def test_deployment_behind_several_services():
    def svc(name: str, port: int, proto: str, tp: int | None = None) -> str:
        target = f", targetPort: {tp}" if tp else ""
        return (
            f"\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n"
            f"spec:\n  selector: {{app: details}}\n  ports: [{{name: p, port: {port}, protocol: {proto}{target}}}]\n"
        )

    msgs = run(
        DEPLOY + svc("a", 9080, "TCP") + svc("b", 9080, "UDP"), "deployment.MultiServiceAnalyzer"
    )
    assert [m.code for m in msgs] == ["IST0116"]
    assert (
        msgs[0].text
        == "This deployment details is associated with multiple services using port 9080 but different protocols: [shop/a shop/b]"
    )
    msgs = run(
        DEPLOY + svc("a", 9080, "TCP", 8080) + svc("b", 9090, "TCP", 8080),
        "deployment.MultiServiceAnalyzer",
    )
    assert [m.code for m in msgs] == ["IST0137"]
    assert (
        msgs[0].text
        == 'This deployment details is associated with multiple services [shop/a shop/b] using targetPort "8080" but different ports: [9080 9090].'
    )
    # Out of the mesh: not checked.
    out = DEPLOY.replace(
        "labels: {app: details}}",
        "labels: {app: details}, annotations: {sidecar.istio.io/inject: 'false'}}",
    )
    assert (
        run(out + svc("a", 9080, "TCP") + svc("b", 9080, "UDP"), "deployment.MultiServiceAnalyzer")
        == []
    )


def test_application_uid():
    msgs = run(
        DEPLOY.replace(
            "spec: {containers: [{name: details, image: details}]}",
            "spec: {securityContext: {runAsUser: 1337}, containers: [{name: details}]}",
        )
        + """
---
apiVersion: v1
kind: Pod
metadata: {name: injected, namespace: shop}
spec:
  containers:
  - {name: app, securityContext: {runAsUser: 1000}}
  - {name: istio-proxy, image: proxy, securityContext: {runAsUser: 1337}}
""",
        "applicationUID.Analyzer",
    )
    assert pairs(msgs) == {("IST0144", "Deployment shop/details"): 1}


def test_injection():
    msgs = run(
        """
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata: {name: both, labels: {istio-injection: enabled, istio.io/rev: canary}}
---
apiVersion: v1
kind: Namespace
metadata: {name: quiet, labels: {istio-injection: disabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: live, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: live}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: opted-out, namespace: live, labels: {sidecar.istio.io/inject: "false"}}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: injected, namespace: live}
spec: {containers: [{name: app, image: app}, {name: istio-proxy, image: proxy}]}
""",
        "injection.Analyzer",
    )
    assert pairs(msgs) == {
        ("IST0102", "Namespace plain"): 1,
        ("IST0123", "Namespace both"): 1,
        ("IST0103", "Pod live/bare"): 1,
    }
    ns_msg = next(m for m in msgs if m.code == "IST0102")
    assert "kubectl label namespace plain istio-injection=enabled" in ns_msg.text


def test_annotations():
    msgs = run(
        """
apiVersion: v1
kind: Service
metadata:
  name: svc
  namespace: default
  annotations: {networking.istio.io/exportTo: ".", networking.istio.io/exportToo: x, example.com/other: y}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: pod
  namespace: default
  annotations:
    readiness.status.sidecar.istio.io/periodSeconds: soon
    traffic.sidecar.istio.io/includeOutboundIPRanges: "10.0.0.0/8,*"
    sidecar.istio.io/statsInclusionPrefixes: cluster
    istio.io/rev: canary
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns, annotations: {sidecar.istio.io/proxyCPU: 100m}}
""",
        "annotations.K8sAnalyzer",
    )
    assert pairs(msgs) == {
        ("IST0108", "Service default/svc"): 1,
        ("IST0125", "Pod default/pod"): 2,
        ("IST0135", "Pod default/pod"): 1,
        ("IST0107", "Namespace ns"): 1,
    }
    misplaced = next(m for m in msgs if m.code == "IST0107")
    assert (
        misplaced.text
        == "Misplaced annotation: sidecar.istio.io/proxyCPU can only be applied to Pod"
    )
    deprecated = next(m for m in msgs if m.code == "IST0135")
    assert (
        deprecated.text
        == 'Annotation "sidecar.istio.io/statsInclusionPrefixes" has been deprecated and may not work in future Istio versions.'
    )
    alpha = run(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, annotations: {networking.istio.io/exportTo: '.'}}\n",
        "annotations.AlphaAnalyzer",
    )
    assert [m.code for m in alpha] == ["IST0136"]
