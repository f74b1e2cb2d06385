"""Kubernetes kinds, metadata rules, and the Gateway API kinds."""

import pytest

from .helpers import doc, errors_of, has, issues_of, warnings_of


def svc(spec, **kw):
    return doc("v1", "Service", spec, **kw)


def deploy(pod_spec, selector=None, labels=None, **spec_extra):
    spec = {
        "selector": {"matchLabels": selector if selector is not None else {"app": "a"}},
        "template": {"metadata": {"labels": labels if labels is not None else {"app": "a"}}, "spec": pod_spec},
    }
    spec.update(spec_extra)
    return doc("apps/v1", "Deployment", spec)


C = {"name": "app", "image": "img"}

SVC_ERRORS = [
    ({"ports": []}, "spec.ports", "needs at least one port"),
    ({"ports": [{"port": 0}]}, "spec.ports[0].port", "1..65535"),
    ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name", "every port needs a name"),
    ({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}, "spec.ports[1].name", "duplicate port name"),
    ({"ports": [{"port": 80, "name": "Web"}]}, "spec.ports[0].name", "DNS-1123 label"),
    ({"ports": [{"port": 80, "protocol": "HTTP"}]}, "spec.ports[0].protocol", "unsupported value 'HTTP'"),
    ({"ports": [{"port": 80, "targetPort": "this-name-is-too-long"}]}, "spec.ports[0].targetPort", "no more than 15"),
    ({"ports": [{"port": 80, "targetPort": 70000}]}, "spec.ports[0].targetPort", "1..65535"),
    ({"ports": [{"port": 80, "targetPort": [1]}]}, "spec.ports[0].targetPort", "must be an integer or a string"),
    ({"ports": [{"port": 80, "nodePort": 30080}]}, "spec.ports[0].nodePort", "may not be used when `type` is 'ClusterIP'"),
    ({"type": "ExternalName"}, "spec.externalName", "required"),
    ({"type": "Magic", "ports": [{"port": 80}]}, "spec.type", "unsupported value"),
    ({"ports": [{"port": 80}], "selector": {"app": "a b"}}, "spec.selector[app]", "valid label value"),
    ({"ports": [{"port": 80}], "clusterIP": "10.0.0.300"}, "spec.clusterIP", "not a valid IP"),
]


@pytest.mark.parametrize("spec, path, fragment", SVC_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(SVC_ERRORS)])
def test_service_errors(spec, path, fragment):
    found = errors_of(svc(spec))
    assert has(found, path, fragment), found


def test_service_valid_forms():
    assert errors_of(svc({"ports": [{"port": 9080, "name": "http", "targetPort": 8080, "appProtocol": "http"}], "selector": {"app": "r"}})) == []
    assert errors_of(svc({"type": "ExternalName", "externalName": "db.example.com"})) == []
    assert errors_of(svc({"clusterIP": "None", "selector": {"app": "r"}})) == []
    assert errors_of(svc({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})) == []


def test_service_name_is_a_dns_1035_label():
    found = errors_of(svc({"ports": [{"port": 80}]}, name="1st"))
    assert has(found, "metadata.name", "DNS-1035")


DEPLOY_ERRORS = [
    (deploy({"containers": [C]}, selector={}), "spec.selector", "empty selector"),
    (deploy({"containers": [C]}, labels={"app": "b"}), "spec.template.metadata.labels", "`selector` does not match template `labels`"),
    (deploy({"containers": []}), "spec.template.spec.containers", "at least one container"),
    (deploy({"containers": [{"name": "app"}]}), "spec.template.spec.containers[0].image", "required"),
    (deploy({"containers": [{"image": "i"}]}), "spec.template.spec.containers[0].name", "required"),
    (deploy({"containers": [C, C]}), "spec.template.spec.containers[1].name", "duplicate container name"),
    (deploy({"containers": [{**C, "ports": [{"containerPort": 0}]}]}), "spec.template.spec.containers[0].ports[0].containerPort", "1..65535"),
    (deploy({"containers": [{**C, "ports": [{"containerPort": 80, "name": "http-port-name-too-long"}]}]}), "spec.template.spec.containers[0].ports[0].name", "no more than 15"),
    (deploy({"containers": [{**C, "env": [{"name": "1X", "value": "v"}]}]}), "spec.template.spec.containers[0].env[0].name", "environment variable name"),
    (deploy({"containers": [{**C, "env": [{"name": "X", "value": 3}]}]}), "spec.template.spec.containers[0].env[0].value", "must be a string"),
    (deploy({"containers": [{**C, "env": [{"name": "X", "value": "a", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}), "spec.template.spec.containers[0].env[0]", "only one of value, valueFrom"),
    (deploy({"containers": [{**C, "readinessProbe": {"periodSeconds": 5}}]}), "spec.template.spec.containers[0].readinessProbe", "must specify a handler type"),
    (deploy({"containers": [{**C, "livenessProbe": {"httpGet": {"port": 8080}, "tcpSocket": {"port": 8080}}}]}), "spec.template.spec.containers[0].livenessProbe", "only one of exec, httpGet, tcpSocket, grpc"),
    (deploy({"containers": [{**C, "livenessProbe": {"tcpSocket": {"port": 8080}, "successThreshold": 2}}]}), "spec.template.spec.containers[0].livenessProbe.successThreshold", "must be 1"),
    (deploy({"containers": [{**C, "readinessProbe": {"httpGet": {"port": 0}}}]}), "spec.template.spec.containers[0].readinessProbe.httpGet.port", "1..65535"),
    (deploy({"containers": [{**C, "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}), "spec.template.spec.containers[0].volumeMounts[0].name", "not found"),
    (deploy({"containers": [C], "restartPolicy": "Never"}), "spec.template.spec.restartPolicy", "must use \"Always\""),
    (deploy({"containers": [C]}, replicas=-1), "spec.replicas", "out of range"),
    (deploy({"containers": [C]}, strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}), "spec.strategy.rollingUpdate", "Recreate"),
]


@pytest.mark.parametrize("text, path, fragment", DEPLOY_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(DEPLOY_ERRORS)])
def test_deployment_errors(text, path, fragment):
    found = errors_of(text)
    assert has(found, path, fragment), found


def test_deployment_valid():
    pod = {"serviceAccountName": "sa", "containers": [{
        **C, "command": ["python", "-m", "app"], "args": ["--port", "8080"],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": "A", "value": "1"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "initialDelaySeconds": 2, "periodSeconds": 5},
        "livenessProbe": {"exec": {"command": ["true"]}},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": 1}},
        "securityContext": {"runAsUser": 1000},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
        "volumes": [{"name": "tmp", "emptyDir": {}}]}
    assert errors_of(deploy(pod, replicas=3)) == []


def test_pod_secret_configmap_namespace():
    assert errors_of(doc("v1", "Pod", {"containers": [C]})) == []
    assert has(errors_of(doc("v1", "Secret", None, type="kubernetes.io/tls", data={"tls.crt": "YQ=="})), "data[tls.key]", "required key")
    assert has(errors_of(doc("v1", "Secret", None, data={"a": "not base64!"})), "data[a]", "base64")
    assert has(errors_of(doc("v1", "Secret", None, stringData={"a b": "x"})), "stringData[a b]", "valid config key")
    assert errors_of(doc("v1", "Secret", None, type="kubernetes.io/tls", data={"tls.crt": "YQ==", "tls.key": "Yg=="})) == []
    assert has(errors_of(doc("v1", "ConfigMap", None, data={"k": "v"}, binaryData={"k": "YQ=="})), "binaryData[k]", "duplicate")
    assert errors_of(doc("v1", "Namespace", None, namespace=None, name="prod")) == []
    assert has(errors_of(doc("v1", "Namespace", None, namespace=None, name="prod.eu")), "metadata.name", "DNS-1123 label")
    assert errors_of(doc("v1", "ServiceAccount", None, automountServiceAccountToken=False)) == []


METADATA_ERRORS = [
    ({"name": "Reviews"}, "metadata.name", "DNS-1123 subdomain"),
    ({"name": "r" * 254}, "metadata.name", "no more than 253"),
    ({}, "metadata.name", "required field is missing"),
    ({"name": "r", "namespace": "Prod"}, "metadata.namespace", "DNS-1123 label"),
    ({"name": "r", "labels": {"app": "a/b"}}, "metadata.labels[app]", "valid label value"),
    ({"name": "r", "labels": {"-app": "a"}}, "metadata.labels[-app]", "name part"),
    ({"name": "r", "annotations": {"bad key!": "x"}}, "metadata.annotations[bad key!]", "name part"),
    ({"name": "r", "annotations": {"istio.io/always-reject": "x"}}, "metadata.annotations[istio.io/always-reject]", "rejecting"),
    ({"name": "r", "labels": {"a": 1}}, "metadata.labels[a]", "must be a string"),
    ({"name": "r", "resourceVersion": 5}, "metadata.resourceVersion", "must be a string"),
    ({"name": "r", "colour": "blue"}, "metadata.colour", "unknown field"),
]


@pytest.mark.parametrize("md, path, fragment", METADATA_ERRORS, ids=[f"{i}:{c[2][:30]}" for i, c in enumerate(METADATA_ERRORS)])
def test_metadata_errors(md, path, fragment):
    import yaml

    text = yaml.safe_dump({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": md,
                           "spec": {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}]}]}})
    found = errors_of(text)
    assert has(found, path, fragment), found


def gapi(kind, spec):
    return doc("gateway.networking.k8s.io/v1", kind, spec)


def test_gateway_api_kinds():
    ok_gw = gapi("Gateway", {"gatewayClassName": "istio", "listeners": [
        {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}},
        {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.example.com",
         "tls": {"mode": "Terminate", "certificateRefs": [{"name": "cert"}]}}]})
    assert errors_of(ok_gw) == []
    assert has(warnings_of(ok_gw), "", "does not act on it yet")
    bad = errors_of(gapi("Gateway", {"gatewayClassName": "istio", "listeners": [
        {"name": "a", "port": 80, "protocol": "HTTP", "tls": {"mode": "Terminate"}},
        {"name": "a", "port": 443, "protocol": "HTTPS"}]}))
    assert has(bad, "spec.listeners[0].tls", "must not be specified")
    assert has(bad, "spec.listeners[1].name", "must be unique")
    assert has(bad, "spec.listeners[1].tls", "must be specified")
    # schema errors come first: the semantic rules run on schema-valid objects only
    bad = errors_of(gapi("Gateway", {"gatewayClassName": "istio", "listeners": [{"name": "a", "port": 70000, "protocol": "HTTP"}]}))
    assert has(bad, "spec.listeners[0].port", "out of range")
    bad = errors_of(gapi("HTTPRoute", {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "api"}}],
                                                  "backendRefs": [{"name": "svc"}]}]}))
    assert has(bad, "spec.rules[0].matches[0].path.value", "start with '/'")
    assert has(bad, "spec.rules[0].backendRefs[0].port", "Must have port for Service reference")
    assert has(errors_of(gapi("Gateway", {"listeners": [{"name": "a", "port": 80, "protocol": "HTTP"}]})), "spec.gatewayClassName", "required")


def test_ignored_and_unknown_kinds_are_warnings():
    found = issues_of(doc("networking.istio.io/v1alpha3", "EnvoyFilter", {"configPatches": []}))
    assert [p for p, _ in found] == [""] and "ignored" in found[0][1]
    found = issues_of(doc("extensions.istio.io/v1alpha1", "WasmPlugin", {"url": "oci://x"}))
    assert "ignored" in found[0][1]
    found = issues_of(doc("rbac.istio.io/v1alpha1", "ServiceRole", {}))
    assert "unknown kind 'ServiceRole'" in found[0][1]
