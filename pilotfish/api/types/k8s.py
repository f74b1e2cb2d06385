"""Kubernetes core kinds the mesh reads: Namespace, Service, Deployment, Pod, ServiceAccount,
Secret and ConfigMap.

Everything the mesh uses is typed. Pod templates are lenient (:class:`LenientModel`): the
fields Kubernetes defines but the mesh does not use are listed with a loose type (``Any``), and
fields Kubernetes does not define are reported as warnings and ignored, since real manifests
carry many fields and Kubernetes keeps adding some.

Defaults are Kubernetes' own (``replicas: 1``, ``protocol: TCP``, ``type: ClusterIP``,
probe ``periodSeconds: 10``...).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from pilotfish.api.schema import Base64, Int32, Int64, LenientModel, Model, NonNegInt32
from pilotfish.api.types.meta import LabelSelector, ObjectMeta, TypedObject

IntOrString = int | str
#: TCP, UDP or SCTP. Kept a plain string in the model (checked by the rules) so that objects
#: Kubernetes would refuse can still be read as cluster state by analyzers.
Protocol = str

# --- pods ------------------------------------------------------------------------------------


class ObjectFieldSelector(Model):
    field_path: str
    api_version: str = ""


class ResourceFieldSelector(Model):
    resource: str
    container_name: str = ""
    divisor: IntOrString | None = None


class KeySelector(Model):
    """``configMapKeyRef`` / ``secretKeyRef``."""

    key: str
    name: str = ""
    optional: bool | None = None


class FileKeySelector(LenientModel):
    volume_name: str = ""
    path: str = ""
    key: str = ""
    optional: bool | None = None


class EnvVarSource(Model):
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: KeySelector | None = None
    secret_key_ref: KeySelector | None = None
    file_key_ref: FileKeySelector | None = None

    _oneofs = (("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef"),)


class EnvVar(Model):
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None

    _oneofs = (("value", "valueFrom"),)


class LocalRef(Model):
    name: str = ""
    optional: bool | None = None


class EnvFromSource(Model):
    prefix: str = ""
    config_map_ref: LocalRef | None = None
    secret_ref: LocalRef | None = None


class ContainerPort(Model):
    container_port: Int32
    name: str = ""
    protocol: Protocol = "TCP"
    host_port: Int32 | None = None
    host_ip: str = msgspec.field(default="", name="hostIP")


class HTTPHeader(Model):
    name: str
    value: str = ""


class HTTPGetAction(Model):
    port: IntOrString
    path: str = ""
    host: str = ""
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: list[HTTPHeader] = []


class TCPSocketAction(Model):
    port: IntOrString
    host: str = ""


class ExecAction(Model):
    command: list[str] = []


class GRPCAction(Model):
    port: Int32
    service: str = ""


class Probe(Model):
    """A container probe. Kubernetes defaults: every 10s, 1s timeout, 1 success, 3 failures."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: NonNegInt32 = 0
    timeout_seconds: NonNegInt32 = 1
    period_seconds: NonNegInt32 = 10
    success_threshold: NonNegInt32 = 1
    failure_threshold: NonNegInt32 = 3
    termination_grace_period_seconds: Int64 | None = None

    _oneofs = (("exec", "httpGet", "tcpSocket", "grpc"),)

    @property
    def handler(self) -> ExecAction | HTTPGetAction | TCPSocketAction | GRPCAction | None:
        return self.exec or self.http_get or self.tcp_socket or self.grpc


class ResourceRequirements(LenientModel):
    limits: dict[str, IntOrString | float] = {}
    requests: dict[str, IntOrString | float] = {}
    claims: list[Any] = []


class VolumeMount(LenientModel):
    name: str
    mount_path: str
    sub_path: str = ""
    sub_path_expr: str = ""
    read_only: bool = False
    recursive_read_only: str = ""
    mount_propagation: str = ""


class Container(LenientModel):
    name: str = ""  # required: checked by the rules
    image: str = ""
    command: list[str] = []
    args: list[str] = []
    working_dir: str = ""
    ports: list[ContainerPort] = []
    env: list[EnvVar] = []
    env_from: list[EnvFromSource] = []
    resources: ResourceRequirements | None = None
    resize_policy: list[Any] = []
    restart_policy: str = ""
    restart_policy_rules: list[Any] = []
    volume_mounts: list[VolumeMount] = []
    volume_devices: list[Any] = []
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: Any = None
    termination_message_path: str = ""
    termination_message_policy: str = ""
    image_pull_policy: Literal["Always", "Never", "IfNotPresent"] | None = None
    security_context: Any = None
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False


class KeyToPath(LenientModel):
    key: str
    path: str
    mode: Int32 | None = None


class EmptyDirVolumeSource(LenientModel):
    medium: str = ""
    size_limit: IntOrString | None = None


class SecretVolumeSource(LenientModel):
    secret_name: str = ""
    items: list[KeyToPath] = []
    default_mode: Int32 | None = None
    optional: bool | None = None


class ConfigMapVolumeSource(LenientModel):
    name: str = ""
    items: list[KeyToPath] = []
    default_mode: Int32 | None = None
    optional: bool | None = None


class Volume(LenientModel):
    """A pod volume: the sources the mesh may use are typed, the others kept as given."""

    name: str
    empty_dir: EmptyDirVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    config_map: ConfigMapVolumeSource | None = None
    host_path: Any = None
    persistent_volume_claim: Any = None
    projected: Any = None
    downward_api: Any = msgspec.field(default=None, name="downwardAPI")
    csi: Any = None
    ephemeral: Any = None
    image: Any = None
    nfs: Any = None
    iscsi: Any = None
    glusterfs: Any = None
    rbd: Any = None
    flex_volume: Any = None
    cinder: Any = None
    cephfs: Any = None
    flocker: Any = None
    fc: Any = None
    azure_file: Any = None
    azure_disk: Any = None
    vsphere_volume: Any = None
    quobyte: Any = None
    photon_persistent_disk: Any = None
    portworx_volume: Any = None
    scale_io: Any = msgspec.field(default=None, name="scaleIO")
    storageos: Any = None
    gce_persistent_disk: Any = None
    aws_elastic_block_store: Any = None
    git_repo: Any = None


class LocalObjectReference(LenientModel):
    name: str = ""


class PodSpec(LenientModel):
    containers: list[Container]
    init_containers: list[Container] = []
    ephemeral_containers: list[Any] = []
    volumes: list[Volume] = []
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    termination_grace_period_seconds: Int64 | None = None
    active_deadline_seconds: Int64 | None = None
    dns_policy: str = ""
    dns_config: Any = None
    node_selector: dict[str, str] = {}
    service_account_name: str = ""
    service_account: str = ""  # deprecated alias of serviceAccountName
    automount_service_account_token: bool | None = None
    node_name: str = ""
    host_network: bool = False
    host_pid: bool = msgspec.field(default=False, name="hostPID")
    host_ipc: bool = msgspec.field(default=False, name="hostIPC")
    host_users: bool | None = None
    share_process_namespace: bool | None = None
    security_context: Any = None
    image_pull_secrets: list[LocalObjectReference] = []
    hostname: str = ""
    hostname_override: str = ""
    subdomain: str = ""
    set_hostname_as_fqdn: bool | None = msgspec.field(default=None, name="setHostnameAsFQDN")
    affinity: Any = None
    scheduler_name: str = ""
    tolerations: list[Any] = []
    host_aliases: list[Any] = []
    priority_class_name: str = ""
    priority: Int32 | None = None
    preemption_policy: str = ""
    readiness_gates: list[Any] = []
    runtime_class_name: str | None = None
    enable_service_links: bool | None = None
    overhead: dict[str, Any] = {}
    topology_spread_constraints: list[Any] = []
    os: Any = None
    scheduling_gates: list[Any] = []
    resource_claims: list[Any] = []
    resources: Any = None

    @property
    def service_account_or_default(self) -> str:
        return self.service_account_name or self.service_account or "default"


class PodTemplateSpec(Model):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec | None = None


# --- kinds -----------------------------------------------------------------------------------


class Namespace(TypedObject):
    spec: Any = None
    status: Any = None


class ServicePort(Model):
    port: Int32
    name: str = ""
    protocol: Protocol = "TCP"
    app_protocol: str = ""
    target_port: IntOrString | None = None  # defaults to ``port``
    node_port: Int32 | None = None

    @property
    def effective_target_port(self) -> int | str:
        """What Kubernetes fills in when ``targetPort`` is omitted: the service port."""
        return self.port if self.target_port is None else self.target_port


class SessionAffinityConfig(LenientModel):
    client_ip: Any = msgspec.field(default=None, name="clientIP")


class ServiceSpec(LenientModel):
    ports: list[ServicePort] = []
    selector: dict[str, str] = {}
    cluster_ip: str = msgspec.field(default="", name="clusterIP")
    cluster_ips: list[str] = msgspec.field(default_factory=list, name="clusterIPs")
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    external_ips: list[str] = msgspec.field(default_factory=list, name="externalIPs")
    session_affinity: Literal["None", "ClientIP"] = "None"
    session_affinity_config: SessionAffinityConfig | None = None
    load_balancer_ip: str = msgspec.field(default="", name="loadBalancerIP")
    load_balancer_source_ranges: list[str] = []
    load_balancer_class: str | None = None
    external_name: str = ""
    external_traffic_policy: Literal["Cluster", "Local"] | None = None
    internal_traffic_policy: Literal["Cluster", "Local"] | None = None
    health_check_node_port: Int32 | None = None
    publish_not_ready_addresses: bool = False
    ip_families: list[Literal["IPv4", "IPv6"]] = []
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    allocate_load_balancer_node_ports: bool | None = None
    traffic_distribution: str | None = None

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"


class Service(TypedObject):
    spec: ServiceSpec = msgspec.field(default_factory=ServiceSpec)
    status: Any = None


class RollingUpdateDeployment(Model):
    max_unavailable: IntOrString | None = None  # Kubernetes default: 25%
    max_surge: IntOrString | None = None  # Kubernetes default: 25%


class DeploymentStrategy(Model):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None


class DeploymentSpec(LenientModel):
    selector: LabelSelector
    template: PodTemplateSpec
    replicas: NonNegInt32 = 1
    strategy: DeploymentStrategy | None = None
    min_ready_seconds: NonNegInt32 = 0
    revision_history_limit: NonNegInt32 = 10
    paused: bool = False
    progress_deadline_seconds: NonNegInt32 = 600


class Deployment(TypedObject):
    spec: DeploymentSpec
    status: Any = None


class Pod(TypedObject):
    spec: PodSpec | None = None
    status: Any = None


class ServiceAccount(TypedObject):
    secrets: list[Any] = []
    image_pull_secrets: list[LocalObjectReference] = []
    automount_service_account_token: bool | None = None


class Secret(TypedObject):
    """A Secret; ``data`` values are base64. Gateway TLS credentials use ``tls.crt``/``tls.key``
    (and ``ca.crt`` for mutual TLS), or ``cert``/``key``/``cacert``."""

    data: dict[str, Base64] = {}
    string_data: dict[str, str] = {}
    type: str = "Opaque"
    immutable: bool | None = None

    def value(self, key: str) -> bytes | None:
        """A key's decoded value, ``stringData`` winning over ``data`` as Kubernetes does."""
        if key in self.string_data:
            return self.string_data[key].encode()
        raw = self.data.get(key)
        if raw is None:
            return None
        import base64

        return base64.b64decode(raw)


class ConfigMap(TypedObject):
    data: dict[str, str] = {}
    binary_data: dict[str, Base64] = {}
    immutable: bool | None = None
