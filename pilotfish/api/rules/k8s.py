"""Semantic rules of the Kubernetes kinds, after the API server's validation (the parts that
matter for a mesh: names, ports, selectors, containers, probes, volumes, secrets)."""

from __future__ import annotations

import base64
import re

from pilotfish.api import checks
from pilotfish.api.issues import FieldPath
from pilotfish.api.kinds import APPS, CORE
from pilotfish.api.rules import SPEC, Ctx, rule
from pilotfish.api.types import k8s

ROOT = FieldPath()
_MiB = 1024 * 1024
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _label_map(ctx: Ctx, path: FieldPath, labels: dict[str, str]) -> None:
    for k, v in labels.items():
        ctx.check(path.k(k), checks.validate_qualified_name(k))
        ctx.check(path.k(k), checks.validate_label_value(v))


def _named_or_number_port(ctx: Ctx, path: FieldPath, port: int | str) -> None:
    if isinstance(port, int):
        ctx.check(path, checks.validate_port(port))
    else:
        ctx.check(path, checks.validate_iana_svc_name(port))


@rule(CORE, "Service")
def validate_service(svc: k8s.Service, ctx: Ctx) -> None:
    spec = svc.spec
    sp = SPEC
    if spec.type == "ExternalName":
        if not spec.external_name:
            ctx.error(sp.f("externalName"), "required field is missing for type ExternalName")
        else:
            name = spec.external_name.rstrip(".")
            ctx.check(sp.f("externalName"), checks.validate_dns1123_subdomain(name))
        if spec.cluster_ip and spec.cluster_ip != "None":
            ctx.error(sp.f("clusterIP"), "must be empty for type ExternalName")
    elif not spec.ports and spec.cluster_ip != "None":
        ctx.error(sp.f("ports"), "required field is missing (a Service needs at least one port)")
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(spec.ports):
        pp = sp.f("ports").i(i)
        if len(spec.ports) > 1 and not p.name:
            ctx.error(pp.f("name"), "required field is missing (every port needs a name when a Service has more than one)")
        if p.name:
            ctx.check(pp.f("name"), checks.validate_dns1123_label(p.name))
            if p.name in names:
                ctx.error(pp.f("name"), f"duplicate port name {p.name!r}")
            names.add(p.name)
        ctx.check(pp.f("port"), checks.validate_port(p.port))
        _check_protocol(ctx, pp.f("protocol"), p.protocol)
        if (p.port, p.protocol) in seen:
            ctx.error(pp, f"duplicate port {p.port}/{p.protocol}")
        seen.add((p.port, p.protocol))
        if p.target_port is not None:
            _named_or_number_port(ctx, pp.f("targetPort"), p.target_port)
        if p.node_port is not None:
            if spec.type not in ("NodePort", "LoadBalancer"):
                ctx.error(pp.f("nodePort"), f"may not be used when `type` is {spec.type!r}")
            else:
                ctx.check(pp.f("nodePort"), checks.validate_port(p.node_port))
        if p.app_protocol:
            ctx.check(pp.f("appProtocol"), checks.validate_qualified_name(p.app_protocol))
    _label_map(ctx, sp.f("selector"), spec.selector)
    if spec.cluster_ip and spec.cluster_ip != "None":
        ctx.check(sp.f("clusterIP"), checks.validate_ip(spec.cluster_ip))
    for i, ip in enumerate(spec.external_ips):
        ctx.check(sp.f("externalIPs").i(i), checks.validate_ip(ip))


@rule(APPS, "Deployment")
def validate_deployment(d: k8s.Deployment, ctx: Ctx) -> None:
    spec = d.spec
    sel = spec.selector
    if not sel.match_labels and not sel.match_expressions:
        ctx.error(SPEC.f("selector"), "empty selector is invalid for deployment")
    _label_map(ctx, SPEC.f("selector").f("matchLabels"), sel.match_labels)
    tpl_labels = spec.template.metadata.labels
    _label_map(ctx, SPEC.f("template").f("metadata").f("labels"), tpl_labels)
    if (sel.match_labels or sel.match_expressions) and not sel.matches(tpl_labels):
        ctx.error(SPEC.f("template").f("metadata").f("labels"), "`selector` does not match template `labels`")
    if spec.strategy is not None and spec.strategy.type == "Recreate" and spec.strategy.rolling_update is not None:
        ctx.error(SPEC.f("strategy").f("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'")
    pod = spec.template.spec
    tp = SPEC.f("template").f("spec")
    if pod is None:
        ctx.error(tp, "required field is missing (the pod template needs a spec)")
        return
    if pod.restart_policy != "Always":
        ctx.error(tp.f("restartPolicy"), f'unsupported value "{pod.restart_policy}": a Deployment\'s pods must use "Always"')
    validate_pod_spec(ctx, tp, pod)


@rule(CORE, "Pod")
def validate_pod(pod: k8s.Pod, ctx: Ctx) -> None:
    if pod.spec is None:
        ctx.error(SPEC, "required field is missing")
        return
    validate_pod_spec(ctx, SPEC, pod.spec)


def validate_pod_spec(ctx: Ctx, path: FieldPath, spec: k8s.PodSpec) -> None:
    if not spec.containers:
        ctx.error(path.f("containers"), "required field is missing (a pod needs at least one container)")
    volumes: set[str] = set()
    for i, v in enumerate(spec.volumes):
        vp = path.f("volumes").i(i).f("name")
        ctx.check(vp, checks.validate_dns1123_label(v.name))
        if v.name in volumes:
            ctx.error(vp, f"duplicate volume name {v.name!r}")
        volumes.add(v.name)
    names: set[str] = set()
    for field, containers in (("initContainers", spec.init_containers), ("containers", spec.containers)):
        for i, c in enumerate(containers):
            _validate_container(ctx, path.f(field).i(i), c, names, volumes)
    if spec.service_account_name:
        ctx.check(path.f("serviceAccountName"), checks.validate_dns1123_subdomain(spec.service_account_name))
    if spec.termination_grace_period_seconds is not None and spec.termination_grace_period_seconds < 0:
        ctx.error(path.f("terminationGracePeriodSeconds"), "must be greater than or equal to 0")
    _label_map(ctx, path.f("nodeSelector"), spec.node_selector)


def _check_protocol(ctx: Ctx, path: FieldPath, protocol: str) -> None:
    if protocol not in ("TCP", "UDP", "SCTP"):
        ctx.error(path, f'unsupported value {protocol!r}: supported values: "SCTP", "TCP", "UDP"')


def _validate_container(ctx: Ctx, path: FieldPath, c: k8s.Container, names: set[str], volumes: set[str]) -> None:
    if not c.name:
        ctx.error(path.f("name"), "required field is missing")
    else:
        ctx.check(path.f("name"), checks.validate_dns1123_label(c.name))
    if c.name in names:
        ctx.error(path.f("name"), f"duplicate container name {c.name!r}")
    names.add(c.name)
    if not c.image:
        ctx.error(path.f("image"), "required field is missing")
    port_names: set[str] = set()
    for i, p in enumerate(c.ports):
        pp = path.f("ports").i(i)
        ctx.check(pp.f("containerPort"), checks.validate_port(p.container_port))
        _check_protocol(ctx, pp.f("protocol"), p.protocol)
        if p.host_port is not None and p.host_port != 0:
            ctx.check(pp.f("hostPort"), checks.validate_port(p.host_port))
        if p.name:
            ctx.check(pp.f("name"), checks.validate_iana_svc_name(p.name))
            if p.name in port_names:
                ctx.error(pp.f("name"), f"duplicate port name {p.name!r}")
            port_names.add(p.name)
        if p.host_ip:
            ctx.check(pp.f("hostIP"), checks.validate_ip(p.host_ip))
    for i, e in enumerate(c.env):
        ctx.check(path.f("env").i(i).f("name"), checks.validate_env_var_name(e.name))
        src = e.value_from
        if src is not None and not any(
            (src.field_ref, src.resource_field_ref, src.config_map_key_ref, src.secret_key_ref, src.file_key_ref)
        ):
            ctx.error(path.f("env").i(i).f("valueFrom"), "must specify one of: fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef")
    for field, probe in (("livenessProbe", c.liveness_probe), ("readinessProbe", c.readiness_probe), ("startupProbe", c.startup_probe)):
        if probe is not None:
            _validate_probe(ctx, path.f(field), probe, field)
    mounts: set[str] = set()
    for i, m in enumerate(c.volume_mounts):
        mp = path.f("volumeMounts").i(i)
        if m.name not in volumes:
            ctx.error(mp.f("name"), f"volume {m.name!r} not found in the pod's volumes")
        if not m.mount_path:
            ctx.error(mp.f("mountPath"), "required field is missing")
        elif m.mount_path in mounts:
            ctx.error(mp.f("mountPath"), f"duplicate mount path {m.mount_path!r}")
        mounts.add(m.mount_path)


def _validate_probe(ctx: Ctx, path: FieldPath, probe: k8s.Probe, kind: str) -> None:
    handler = probe.handler
    if handler is None:
        ctx.error(path, "must specify a handler type (exec, httpGet, tcpSocket or grpc)")
    elif isinstance(handler, (k8s.HTTPGetAction, k8s.TCPSocketAction)):
        field = "httpGet" if isinstance(handler, k8s.HTTPGetAction) else "tcpSocket"
        _named_or_number_port(ctx, path.f(field).f("port"), handler.port)
        if isinstance(handler, k8s.HTTPGetAction):
            for i, h in enumerate(handler.http_headers):
                ctx.check(path.f("httpGet").f("httpHeaders").i(i).f("name"), checks.validate_header_name(h.name))
    elif isinstance(handler, k8s.GRPCAction):
        ctx.check(path.f("grpc").f("port"), checks.validate_port(handler.port))
    elif isinstance(handler, k8s.ExecAction) and not handler.command:
        ctx.error(path.f("exec").f("command"), "required field is missing")
    # 0 means "the default" for these (Kubernetes defaults zero values), negatives are refused
    # by the schema.
    if kind in ("livenessProbe", "startupProbe") and probe.success_threshold not in (0, 1):
        ctx.error(path.f("successThreshold"), "must be 1")


@rule(CORE, "Secret")
def validate_secret(sec: k8s.Secret, ctx: Ctx) -> None:
    total = 0
    for field, data in (("data", sec.data), ("stringData", sec.string_data)):
        for k, v in data.items():
            if not _CONFIG_KEY.match(k):
                ctx.error(ROOT.f(field).k(k), f"{k!r}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
            total += len(base64.b64decode(v)) if field == "data" else len(v.encode())
    if total > _MiB:
        ctx.error(ROOT.f("data"), "Secret data may not exceed 1MiB")
    keys = set(sec.data) | set(sec.string_data)
    if sec.type == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in keys:
                ctx.error(ROOT.f("data").k(key), f"required key {key!r} is missing for a kubernetes.io/tls Secret")
    elif sec.type == "kubernetes.io/service-account-token":
        if "kubernetes.io/service-account.name" not in sec.metadata.annotations:
            ctx.error(ROOT.f("metadata").f("annotations"), "kubernetes.io/service-account.name annotation is required")


@rule(CORE, "ConfigMap")
def validate_configmap(cm: k8s.ConfigMap, ctx: Ctx) -> None:
    total = 0
    for field, data in (("data", cm.data), ("binaryData", cm.binary_data)):
        for k, v in data.items():
            if not _CONFIG_KEY.match(k):
                ctx.error(ROOT.f(field).k(k), f"{k!r}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
            total += len(v)
    for k in set(cm.data) & set(cm.binary_data):
        ctx.error(ROOT.f("binaryData").k(k), f"duplicate of key {k!r} present in data")
    if total > _MiB:
        ctx.error(ROOT.f("data"), "ConfigMap data may not exceed 1MiB")
