"""The runtime's controller: Deployments become running pods, and pods are reported back.

It plays the parts Kubernetes splits between the Deployment and ReplicaSet controllers, the
scheduler, the sidecar injector and kube-proxy, for one machine:

- **Deployments -> pods.** Each Deployment gets ``spec.replicas`` pods of its current
  template, named ``<deployment>-<pod-template-hash>-<5 random>`` as Kubernetes names them,
  with the template's labels plus ``pod-template-hash``. A changed template rolls the pods
  (strategy RollingUpdate, Kubernetes' defaults for small counts): a pod of the new template
  starts, and an old pod is stopped each time a new one becomes ready, so the service never
  loses its last ready endpoint. ``strategy: Recreate`` stops the old pods first. Scaling
  down stops pods that are not ready first, then the newest. A deleted Deployment stops its
  pods; a ``paused`` one is left alone. A pod that failed to start (its sidecar never became
  ready...) is replaced after :data:`FAILED_POD_REPLACE_AFTER` seconds.
- **Injection** (Istio's webhook): a pod gets the ``istio-proxy`` sidecar when its namespace is
  labelled ``istio-injection=enabled``; the pod template's ``sidecar.istio.io/inject`` label or
  annotation (``"true"``/``"false"``) overrides that either way. An injected pod's spec lists
  the ``istio-proxy`` container, as Istio's do, so ``READY`` reads ``2/2`` and the analyzers
  see the sidecar.
- **Status back to the store.** Every pod is a ``Pod`` object in the config store, with
  ``status`` (phase, ``podIP``, the ``Ready`` condition, ``containerStatuses`` with
  ``restartCount`` and state), which is what the registry turns into endpoints and what
  ``pilotfish get pods`` prints. Deployments get ``status`` (replicas, updatedReplicas,
  readyReplicas, availableReplicas, conditions). Writes are batched: one change set per
  flush, so a burst of pod changes builds one configuration generation.
- **Names and ClusterIPs in pods** (kube-proxy and CoreDNS): every pod's /etc/hosts maps each
  Service to its ClusterIP (``reviews``, ``reviews.default``, ``reviews.default.svc``,
  ``reviews.default.svc.cluster.local``; short names for the pod's own namespace only), and a
  pod without sidecar gets DNAT rules from each ClusterIP:port to the ready endpoints. Both
  are rewritten when the registry changes (:meth:`Controller.registry_changed`).

Pods this controller made carry the annotation ``pilotfish.io/runtime: local``; at start, any
such Pod left in the store by an earlier run is deleted (its processes are gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotfish.api.loader import Resource
from pilotfish.config.store import Event
from pilotfish.runtime.ipam import MeshStore

log = logging.getLogger("pilotfish.runtime.controller")

__all__ = [
    "Controller", "PodHandle", "wants_sidecar", "template_hash", "pod_status_doc", "rfc3339",
    "MANAGED_BY", "INJECT", "INJECTION_LABEL", "kill_recorded", "record_pids", "recorded_pids",
]

MANAGED_BY = "pilotfish.io/runtime"
INJECT = "sidecar.istio.io/inject"
INJECTION_LABEL = "istio-injection"
SIDECAR = "istio-proxy"
SIDECAR_IMAGE = "pilotfish/proxy"  # informational, as every image here
FAILED_POD_REPLACE_AFTER = 10.0
FLUSH_DELAY = 0.05  # coalesce status writes
# A pod being replaced or scaled away is first reported not ready (terminating), so that its
# endpoint leaves every proxy's configuration, and only then stopped (Kubernetes removes a
# terminating pod from its endpoints the same way before the kubelet kills it).
ENDPOINT_DRAIN = 1.0
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' SafeEncodeString alphabet


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _safe_encode(data: bytes, n: int) -> str:
    v = int.from_bytes(data, "big")
    out = []
    for _ in range(n):
        v, r = divmod(v, len(_HASH_ALPHABET))
        out.append(_HASH_ALPHABET[r])
    return "".join(out)


def template_hash(template: Mapping[str, Any]) -> str:
    """The ``pod-template-hash``: 10 characters of Kubernetes' alphabet from the template."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str).encode()
    return _safe_encode(hashlib.sha256(raw).digest(), 10)


def random_suffix() -> str:
    return _safe_encode(secrets.token_bytes(8), 5)


def _truthy(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).strip().lower()


def wants_sidecar(namespace_labels: Mapping[str, Any], labels: Mapping[str, Any],
                  annotations: Mapping[str, Any]) -> bool:
    """Istio's injection decision: the pod's ``sidecar.istio.io/inject`` label, else its
    annotation, else the namespace's ``istio-injection=enabled`` label."""
    for meta in (labels, annotations):
        v = _truthy(meta.get(INJECT))
        if v is not None:
            return v == "true"
    return _truthy(namespace_labels.get(INJECTION_LABEL)) == "enabled"


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


# --------------------------------------------------------------------------- status documents


def pod_status_doc(st: Any, host_ip: str, spec_containers: list[str]) -> dict[str, Any]:
    """A :class:`~pilotfish.runtime.pod.PodStatus` as a Kubernetes ``Pod.status``."""
    started = {c.name: c for c in st.containers}
    statuses = []
    for name in spec_containers:
        c = started.get(name)
        if c is None:
            statuses.append({"name": name, "ready": False, "restartCount": 0, "started": False,
                             "image": "", "state": {"waiting": {"reason": "ContainerCreating"}}})
            continue
        doc: dict[str, Any] = {"name": c.name, "ready": bool(c.ready), "restartCount": int(c.restarts),
                               "started": c.state == "Running", "image": SIDECAR_IMAGE if c.sidecar else ""}
        if c.state == "Running":
            doc["state"] = {"running": {"startedAt": rfc3339(c.started_at)}}
        elif c.state in ("Completed", "Error", "StartError") and c.exit_code is not None:
            term = {"exitCode": int(c.exit_code), "reason": c.state}
            if c.started_at:
                term["startedAt"] = rfc3339(c.started_at)
            if c.message:
                term["message"] = c.message
            doc["state"] = {"terminated": term}
        else:
            waiting = {"reason": c.state}
            if c.message:
                waiting["message"] = c.message
            doc["state"] = {"waiting": waiting}
        if c.restarts and c.exit_code is not None and c.state != "Completed":
            doc["lastState"] = {"terminated": {"exitCode": int(c.exit_code),
                                               "reason": "Completed" if c.exit_code == 0 else "Error"}}
        statuses.append(doc)
    ready = "True" if st.ready else "False"
    all_started = all(s.get("started") for s in statuses)
    status: dict[str, Any] = {
        "phase": st.phase,
        "hostIP": host_ip,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready if all_started else "False"},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": statuses,
    }
    if st.ip:
        status["podIP"] = st.ip
        status["podIPs"] = [{"ip": st.ip}]
    if st.start_time:
        status["startTime"] = rfc3339(st.start_time)
    if st.reason and st.reason not in ("Running", "Pending", "Succeeded", "Failed"):
        status["reason"] = st.reason
    if st.message:
        status["message"] = st.message
    return status


# --------------------------------------------------------------------------- crash records


def _proc_start_time(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()[19]


def record_pids(path: Path, pids: Iterable[int]) -> None:
    """Remember the process groups we started (pid -> start time), so that a later run can
    end them if this one dies without stopping them."""
    data = {"pids": {str(p): t for p in pids if (t := _proc_start_time(p)) is not None}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def recorded_pids(path: Path) -> dict[int, str]:
    """The recorded process groups that still run (pid -> start time)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    pids = data.get("pids") if isinstance(data, dict) else None
    return {int(p): t for p, t in (pids or {}).items() if _proc_start_time(int(p)) == t}


def kill_recorded(path: Path) -> list[int]:
    """SIGKILL the process groups recorded in ``path`` that still run (same start time), then
    forget them. Returns the pids killed."""
    killed = []
    for pid in recorded_pids(path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
    path.unlink(missing_ok=True)
    return killed


# --------------------------------------------------------------------------- pods


@dataclass(eq=False)
class PodHandle:
    """One pod the controller runs."""

    namespace: str
    name: str
    owner: str  # the Deployment
    template_hash: str
    doc: dict[str, Any]  # apiVersion, kind, metadata, spec (status added when written)
    runner: Any  # PodRunner
    inject: bool
    created: float = field(default_factory=time.time)
    status: Any = None  # the last PodStatus
    stopping: bool = False
    terminating: bool = False  # reported not ready while its endpoint drains away
    failed_at: float | None = None
    task: asyncio.Task | None = None
    hosts_key: Any = None
    services_key: Any = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ready(self) -> bool:
        return bool(self.status is not None and self.status.ready)

    @property
    def containers(self) -> list[str]:
        return [str(_d(c).get("name")) for c in _d(self.doc.get("spec")).get("containers") or []]

    def log_path(self, container: str) -> Path:
        return Path(self.runner.log_path(container))


EventCallback = Callable[[str, PodHandle], None]


class Controller:
    """Runs the store's Deployments as pods (see the module docstring).

    ``runner_factory(namespace, name, pod_spec, labels, annotations, service_account, inject,
    log_dir, on_status, hosts, services)`` makes a
    :class:`~pilotfish.runtime.pod.PodRunner`; the mesh supplies it with the network, the
    sidecar spec and the working directory. ``on_event(what, pod)`` reports ``created``,
    ``status`` and ``deleted`` for progress output."""

    def __init__(self, store: MeshStore, runner_factory: Callable[..., Any], *, log_root: Path,
                 node_name: str, host_ip: str, pids_file: Path | None = None,
                 on_event: EventCallback | None = None, network: bool = True,
                 endpoint_drain: float = ENDPOINT_DRAIN) -> None:
        self.store = store
        self.endpoint_drain = endpoint_drain
        self.runner_factory = runner_factory
        self.log_root = Path(log_root)
        self.node_name = node_name
        self.host_ip = host_ip
        self.pids_file = pids_file
        self.on_event = on_event
        self.network = network
        self.pods: dict[tuple[str, str], PodHandle] = {}
        self.static_pods: dict[tuple[str, str], dict[str, Any]] = {}  # the gateway: doc with status
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sub: Any = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._flush_task: asyncio.Task | None = None
        self._dirty: set[tuple[str, str]] = set()
        self._deleted: set[tuple[str, str]] = set()
        self._dep_status: dict[tuple[str, str], dict[str, Any]] = {}
        self._stopping = False
        self._registry: Any = None
        self._write_lock = asyncio.Lock()
        self._extra_pids: Callable[[], list[int]] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        stale = [so for so in self.store.list("Pod") if _d(so.data["metadata"].get("annotations")).get(MANAGED_BY)]
        if stale:
            await asyncio.to_thread(self.store.delete_resources, [so.to_resource() for so in stale])
        self._sub = self.store.subscribe(self._on_store_event)
        self._task = self._loop.create_task(self._run(), name="controller")
        self._kick()

    async def stop(self, grace: float | None = None) -> None:
        """Stop every pod (in parallel; each stops its apps, then its sidecar, then its
        network), delete their Pod objects and stop watching."""
        self._stopping = True
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        handles = list(self.pods.values())
        for h in handles:
            h.stopping = True
            if h.task is not None and not h.task.done():
                h.task.cancel()
        await asyncio.gather(*(self._stop_runner(h, grace) for h in handles), return_exceptions=True)
        if self._flush_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flush_task
        await self._delete_docs([*self.pods, *self.static_pods])
        self.pods.clear()
        self.static_pods.clear()
        if self.pids_file is not None:
            self.pids_file.unlink(missing_ok=True)

    async def _stop_runner(self, h: PodHandle, grace: float | None) -> None:
        try:
            await h.runner.stop(grace)
        except Exception:
            log.exception("pod %s/%s: stop failed", h.namespace, h.name)

    # ------------------------------------------------------------------ events

    def _on_store_event(self, ev: Event) -> None:
        # on the writer's thread, inside the store's lock: hop onto the loop
        if ev.object.kind not in ("Deployment", "Namespace"):
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.02)  # coalesce a burst of events
            try:
                self.reconcile()
            except Exception:
                log.exception("reconcile failed")

    # ------------------------------------------------------------------ reconcile

    def reconcile(self) -> None:
        if self._stopping:
            return
        deps = {(so.namespace or "default", so.name): so for so in self.store.list("Deployment")}
        namespaces = {so.name: _d(so.data.get("metadata")).get("labels") or {} for so in self.store.list("Namespace")}
        by_owner: dict[tuple[str, str], list[PodHandle]] = {}
        for h in self.pods.values():
            by_owner.setdefault((h.namespace, h.owner), []).append(h)
        for key, hs in by_owner.items():
            if key not in deps:
                for h in hs:
                    self._stop_pod(h)
        now = time.time()
        for key, so in sorted(deps.items()):
            spec = _d(so.data.get("spec"))
            if spec.get("paused"):
                continue
            tpl = _d(spec.get("template"))
            h_new = template_hash(tpl)
            replicas = spec.get("replicas", 1)
            replicas = replicas if isinstance(replicas, int) and replicas >= 0 else 1
            live = [h for h in by_owner.get(key, []) if not h.stopping]
            # failed pods are replaced (a while after they failed)
            for h in list(live):
                if h.status is not None and h.status.phase == "Failed" and not h.status.deleted:
                    h.failed_at = h.failed_at or now
                    if now - h.failed_at >= FAILED_POD_REPLACE_AFTER:
                        self._stop_pod(h)
                        live.remove(h)
                    elif self._loop is not None:
                        self._loop.call_later(FAILED_POD_REPLACE_AFTER + 0.1, self._kick)
            new = [h for h in live if h.template_hash == h_new]
            old = [h for h in live if h.template_hash != h_new]
            recreate = _d(spec.get("strategy")).get("type") == "Recreate"
            if recreate and old:
                for h in old:
                    self._stop_pod(h)
                old = []
            if recreate and any(h.stopping for h in by_owner.get(key, []) if h.template_hash != h_new):
                continue  # Recreate: the new pods start once the old ones are gone
            if len(new) < replicas:
                ns_labels = namespaces.get(key[0], {})
                for _ in range(replicas - len(new)):
                    new.append(self._create_pod(key[0], key[1], tpl, h_new, ns_labels))
            elif len(new) > replicas:
                extra = sorted(new, key=lambda h: (h.ready, -h.created))  # unready first, then the newest
                for h in extra[: len(new) - replicas]:
                    self._stop_pod(h)
                    new.remove(h)
            ready_new = sum(1 for h in new if h.ready)
            keep_old = max(0, replicas - ready_new)
            if len(old) > keep_old:
                for h in sorted(old, key=lambda h: (h.ready, h.created))[: len(old) - keep_old]:
                    self._stop_pod(h)
        self._update_deployment_status(deps)

    def _update_deployment_status(self, deps: Mapping[tuple[str, str], Any]) -> None:
        for key, so in deps.items():
            spec = _d(so.data.get("spec"))
            replicas = spec.get("replicas", 1)
            replicas = replicas if isinstance(replicas, int) else 1
            h_new = template_hash(_d(spec.get("template")))
            hs = [h for h in self.pods.values() if (h.namespace, h.owner) == key and not h.stopping]
            ready = sum(1 for h in hs if h.ready)
            updated = sum(1 for h in hs if h.template_hash == h_new)
            available = min(ready, replicas) if replicas else ready
            status: dict[str, Any] = {
                "observedGeneration": so.generation,
                "replicas": len(hs),
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": available,
                "conditions": [
                    {"type": "Available", "status": "True" if available >= replicas else "False",
                     "reason": "MinimumReplicasAvailable" if available >= replicas else "MinimumReplicasUnavailable"},
                    {"type": "Progressing", "status": "True",
                     "reason": "NewReplicaSetAvailable" if updated == replicas and ready >= replicas
                     else "ReplicaSetUpdated"},
                ],
            }
            if available < replicas:
                status["unavailableReplicas"] = replicas - available
            for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
                if status[k] == 0:
                    del status[k]  # as the API server omits zero counts
            if _d(so.data.get("status")) != status:
                self._dep_status[key] = status
                self._schedule_flush()

    # ------------------------------------------------------------------ pods

    def _create_pod(self, namespace: str, owner: str, tpl: dict[str, Any], thash: str,
                    ns_labels: Mapping[str, Any]) -> PodHandle:
        name = f"{owner}-{thash}-{random_suffix()}"
        while (namespace, name) in self.pods:
            name = f"{owner}-{thash}-{random_suffix()}"
        md = _d(tpl.get("metadata"))
        labels = {str(k): str(v) for k, v in _d(md.get("labels")).items()}
        annotations = {str(k): str(v) for k, v in _d(md.get("annotations")).items()}
        inject = wants_sidecar(ns_labels, labels, annotations)
        labels["pod-template-hash"] = thash
        if inject:
            labels.setdefault("security.istio.io/tlsMode", "istio")
            labels.setdefault("service.istio.io/canonical-name", labels.get("app") or owner)
            labels.setdefault("service.istio.io/canonical-revision", labels.get("version") or "latest")
        annotations[MANAGED_BY] = "local"
        spec = copy.deepcopy(_d(tpl.get("spec")))
        app_spec = copy.deepcopy(spec)  # what the runner runs: the sidecar is its own
        spec["nodeName"] = self.node_name
        sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        spec.setdefault("serviceAccountName", sa)
        if inject:
            annotations["sidecar.istio.io/status"] = json.dumps(
                {"containers": [SIDECAR], "initContainers": [], "volumes": []}, separators=(",", ":"))
            spec["containers"] = [*list(spec.get("containers") or []), {
                "name": SIDECAR, "image": SIDECAR_IMAGE,
                "args": ["proxy", "sidecar", "--interception", "REDIRECT" if self.network else "NONE"],
                "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
            }]
        doc = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "namespace": namespace, "labels": labels, "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{owner}-{thash}",
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": spec,
        }
        key = (namespace, name)
        log_dir = self.log_root / namespace / name
        hosts, services = self._network_for(namespace)
        runner = self.runner_factory(
            namespace=namespace, name=name, pod_spec=app_spec, labels=labels, annotations=annotations,
            service_account=sa, inject=inject, log_dir=log_dir,
            on_status=lambda st, key=key: self._on_status(key, st), hosts=hosts,
            services=services if not inject else None)
        h = PodHandle(namespace, name, owner, thash, doc, runner, inject)
        h.hosts_key, h.services_key = _freeze(hosts), _freeze(services)
        self.pods[key] = h
        self._dirty.add(key)
        self._schedule_flush()
        h.task = asyncio.get_running_loop().create_task(self._start_pod(h), name=f"pod-{name}")
        self._event("created", h)
        return h

    async def _start_pod(self, h: PodHandle) -> None:
        try:
            await h.runner.start()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # PodError: its status says Failed and why
            log.warning("pod %s/%s did not start: %s", h.namespace, h.name, e)
            self._kick()

    def _stop_pod(self, h: PodHandle) -> None:
        if h.stopping:
            return
        h.stopping = True
        self._event("stopping", h)
        loop = asyncio.get_running_loop()

        async def go() -> None:
            if h.ready and not self._stopping and self.endpoint_drain > 0:
                h.terminating = True
                self._dirty.add(h.key)
                await self.flush()
                await asyncio.sleep(self.endpoint_drain)
            if h.task is not None and not h.task.done():
                h.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await h.task
            await self._stop_runner(h, None)
            self._forget(h)

        loop.create_task(go(), name=f"stop-{h.name}")

    def _forget(self, h: PodHandle) -> None:
        if self.pods.get(h.key) is h:
            del self.pods[h.key]
            self._dirty.discard(h.key)
            self._deleted.add(h.key)
            self._schedule_flush()
            if not self._stopping:
                shutil.rmtree(self.log_root / h.namespace / h.name, ignore_errors=True)
            self._event("deleted", h)
            self._kick()

    def _on_status(self, key: tuple[str, str], st: Any) -> None:
        h = self.pods.get(key)
        if h is None:
            return
        was_ready = h.ready
        h.status = st
        if st.phase != "Failed":
            h.failed_at = None
        if st.deleted:
            return  # _forget() follows
        self._dirty.add(key)
        self._schedule_flush()
        self._event("status", h)
        if h.ready != was_ready or st.phase == "Failed":
            self._kick()

    def _event(self, what: str, h: PodHandle) -> None:
        if self.on_event is not None:
            try:
                self.on_event(what, h)
            except Exception:
                log.exception("on_event failed")

    # ------------------------------------------------------------------ static pods (the gateway)

    def publish_static(self, doc: dict[str, Any]) -> None:
        """Report a pod the mesh runs itself (the ingress gateway): ``doc`` with its status."""
        md = doc["metadata"]
        key = (md["namespace"], md["name"])
        self.static_pods[key] = doc
        self._dirty.add(key)
        self._schedule_flush()

    def set_extra_pids(self, fn: Callable[[], list[int]]) -> None:
        self._extra_pids = fn

    # ------------------------------------------------------------------ writing to the store

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_task = loop.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        while self._dirty or self._deleted or self._dep_status:
            await self.flush()

    async def flush(self) -> None:
        async with self._write_lock:
            upserts: list[Resource] = []
            for key in sorted(self._dirty):
                h = self.pods.get(key)
                if h is not None:
                    doc = copy.deepcopy(h.doc)
                    if h.status is not None:
                        doc["status"] = pod_status_doc(h.status, self.host_ip, h.containers)
                        if h.terminating:
                            doc["metadata"]["deletionTimestamp"] = rfc3339(time.time())
                            for cond in doc["status"]["conditions"]:
                                if cond["type"] in ("Ready", "ContainersReady"):
                                    cond["status"] = "False"
                    else:
                        doc["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
                    upserts.append(Resource(doc))
                elif key in self.static_pods:
                    upserts.append(Resource(copy.deepcopy(self.static_pods[key])))
            self._dirty.clear()
            deletes = sorted(self._deleted)
            self._deleted.clear()
            statuses = [("Deployment", ns, name, st) for (ns, name), st in sorted(self._dep_status.items())]
            self._dep_status.clear()
            pids = self._pids() if self.pids_file is not None else None
            try:
                await asyncio.to_thread(self.store.write_runtime, upserts, statuses, deletes)
                if pids is not None and self.pids_file is not None:
                    await asyncio.to_thread(record_pids, self.pids_file, pids)
            except Exception:
                log.exception("cannot write pod status to the store")

    async def _delete_docs(self, keys: Iterable[tuple[str, str]]) -> None:
        keys = list(keys)
        if keys:
            async with self._write_lock:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.store.write_runtime, [], [], keys)

    def _pids(self) -> list[int]:
        out = []
        for h in self.pods.values():
            for name in [*h.containers]:
                try:
                    sup = h.runner.supervisor(name)
                except KeyError:
                    continue
                if sup is not None and sup.container.pid is not None and sup.container.alive:
                    out.append(sup.container.pid)
        if self._extra_pids is not None:
            out += self._extra_pids()
        return out

    # ------------------------------------------------------------------ hosts and ClusterIPs

    def registry_changed(self, registry: Any) -> None:
        """A new registry: rewrite the pods' /etc/hosts and ClusterIP DNAT where they changed."""
        self._registry = registry
        if not self.network or self._stopping:
            return
        per_ns: dict[str, tuple[Any, Any, str, str]] = {}
        for h in list(self.pods.values()):
            if h.stopping:
                continue
            if h.namespace not in per_ns:
                hosts, services = self._network_for(h.namespace)
                per_ns[h.namespace] = (hosts, services, _freeze(hosts), _freeze(services))
            hosts, services, hk, sk = per_ns[h.namespace]
            if h.inject:
                services, sk = None, h.services_key
            if hk == h.hosts_key and sk == h.services_key:
                continue
            h.hosts_key, h.services_key = hk, sk
            asyncio.get_running_loop().create_task(self._update_network(h, hosts, services))

    async def _update_network(self, h: PodHandle, hosts: dict[str, str], services: Any) -> None:
        try:
            await h.runner.update_network(hosts=hosts, services=services)
        except Exception as e:
            if not h.stopping:
                log.warning("pod %s/%s: cannot update /etc/hosts or service rules: %s", h.namespace, h.name, e)

    def _network_for(self, namespace: str) -> tuple[dict[str, str], list[tuple[str, int, list[tuple[str, int]]]]]:
        """(/etc/hosts entries as address -> names, DNAT services) for a pod of ``namespace``."""
        reg = self._registry
        hosts: dict[str, str] = {}
        services: list[tuple[str, int, list[tuple[str, int]]]] = []
        if reg is None:
            return hosts, services
        for svc in reg.services:
            if svc.kind != "Service" or not svc.cluster_ip:
                continue
            fqdn = svc.hostname
            names = [fqdn]
            suffix = ".svc." + reg.domain_suffix
            if fqdn.endswith(suffix):
                base = fqdn[: -len(suffix)]
                names += [base + ".svc", base]
            if svc.namespace == namespace:
                names.append(svc.name)
            hosts[svc.cluster_ip] = " ".join(names)
            for sp in svc.ports:
                if sp.protocol == "UDP":
                    continue
                eps = sorted({(e.address, e.port) for e in reg.endpoints(svc, sp.port)
                              if e.health == "HEALTHY" and _is_ipv4(e.address)})
                services.append((svc.cluster_ip, sp.port, eps))
        return hosts, services


def _is_ipv4(s: str) -> bool:
    parts = s.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _freeze(x: Any) -> Any:
    if x is None:
        return None
    return json.dumps(x, sort_keys=True)
