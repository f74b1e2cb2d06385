"""One pod on this machine: its network, its sidecar, its containers, their probes and its status.

``PodRunner`` does what the kubelet and Istio's injected pieces do for one pod:

1. **Network.** With a :class:`~pilotfish.runtime.network.PodNetwork`: a namespace of its own
   with an address from the pod CIDR, its /etc/hosts, and either Istio's interception rules
   (with a sidecar) or kube-proxy-like DNAT for ClusterIPs (without). Without a network
   (explicit mode, no root): a loopback address ``127.0.1.N`` of its own, no interception.
2. **Sidecar** (``SidecarSpec``): ``python -m pilotfish proxy --discovery ... --role sidecar``
   as uid 1337 in the pod's namespace (REDIRECT), or as an explicit HTTP proxy (NONE). The
   app containers start only once its admin ``/ready`` answers 200 (Istio's
   ``holdApplicationUntilProxyStarts``).
3. **Containers.** ``command`` + ``args`` as processes in the pod (``$(VAR)`` expanded as
   Kubernetes does), ``env`` (values and ``valueFrom.fieldRef``), working directory
   ``workdir`` (or ``workingDir`` below it), ``securityContext.runAsUser/runAsGroup``,
   restarted per ``restartPolicy`` with the kubelet's crash-loop backoff, probed per their
   readiness/liveness/startup probes.
4. **Status.** ``on_status(PodStatus)`` after every change: phase, ready, IP, each
   container's state and restarts, and the STATUS column ``kubectl get pods`` would show.

Run it on one asyncio event loop: ``await runner.start()``, later ``await runner.stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotfish.runtime.network import PROXY_UID, PodNet, PodNetwork
from pilotfish.runtime.process import (
    Backoff,
    Container,
    Probe,
    ProbeError,
    Supervisor,
    http_get_check,
)

log = logging.getLogger("pilotfish.runtime.pod")

__all__ = [
    "ContainerStatus", "LoopbackAllocator", "LoopbackLease", "PodError", "PodRunner", "PodStatus",
    "SidecarSpec", "SIDECAR_NAME", "expand_vars",
]

SIDECAR_NAME = "istio-proxy"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_GRACE = 30.0  # terminationGracePeriodSeconds
ADMIN_PORT = 15000
SIDECAR_READY_PERIOD = 2.0  # the sidecar's readiness probe once it is up
WAITING = ("ContainerCreating", "PodInitializing", "CrashLoopBackOff", "CreateContainerConfigError")

ISTIO_INCLUDE_INBOUND = "traffic.sidecar.istio.io/includeInboundPorts"
ISTIO_EXCLUDE_INBOUND = "traffic.sidecar.istio.io/excludeInboundPorts"
ISTIO_EXCLUDE_OUTBOUND = "traffic.sidecar.istio.io/excludeOutboundPorts"
ISTIO_EXCLUDE_OUTBOUND_RANGES = "traffic.sidecar.istio.io/excludeOutboundIPRanges"


class PodError(RuntimeError):
    """The pod could not start (its network, or its sidecar never became ready)."""


@dataclass
class SidecarSpec:
    """How to run a pod's sidecar. ``discovery_address`` is the control plane as seen from the
    pod: with a PodNetwork that is ``<network.gateway>:<port>`` (the host's side of the bridge),
    so the control plane must listen there; in explicit mode ``127.0.0.1:<port>``. The token
    file is copied into a file only the proxy's uid can read."""

    discovery_address: str
    token_file: str | Path
    proxy_uid: int = PROXY_UID
    python: str = sys.executable
    extra_args: Sequence[str] = ()
    admin_port: int = ADMIN_PORT  # REDIRECT mode (explicit mode picks a free one)
    ready_timeout: float = 60.0
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerStatus:
    """``state`` is the word ``kubectl`` shows: Running, ContainerCreating, CrashLoopBackOff,
    Completed, Error, StartError, CreateContainerConfigError."""

    name: str
    state: str
    ready: bool
    restarts: int
    exit_code: int | None = None  # of the last termination
    started_at: float | None = None  # time.time() of the current (or last) run
    message: str = ""
    sidecar: bool = False


@dataclass(frozen=True)
class PodStatus:
    namespace: str
    name: str
    phase: str  # Pending, Running, Succeeded, Failed
    ready: bool  # every container (the sidecar included) is ready
    ip: str | None
    containers: tuple[ContainerStatus, ...]
    start_time: float | None
    reason: str  # the STATUS column of `kubectl get pods` (Running, CrashLoopBackOff, Terminating...)
    message: str = ""
    deleted: bool = False  # the final report after stop()

    @property
    def ready_count(self) -> str:
        """The READY column: ``"2/2"``."""
        return f"{sum(c.ready for c in self.containers)}/{len(self.containers)}"

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.containers)


# --------------------------------------------------------------------------- explicit mode addresses


class LoopbackLease:
    def __init__(self, ip: str, fd: int) -> None:
        self.ip = ip
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LoopbackAllocator:
    """Addresses ``127.0.1.2`` to ``127.0.1.254`` for pods in explicit mode (Linux routes all of
    127/8 to lo). An address is held by an ``flock`` on ``<directory>/<ip>.lock``: concurrent
    runs never share one, and a crashed run's addresses free themselves."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else Path(tempfile.gettempdir()) / f"pilotfish-{os.getuid()}" / "loopback"

    def acquire(self) -> LoopbackLease:
        self.directory.mkdir(parents=True, exist_ok=True)
        for n in range(2, 255):
            ip = f"127.0.1.{n}"
            fd = os.open(self.directory / f"{ip}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return LoopbackLease(ip, fd)
        raise PodError("no free loopback address in 127.0.1.2-254 for an explicit-mode pod")


_DEFAULT_LOOPBACK = LoopbackAllocator()


class _HeldLock:
    """An flock held on a file while a pod lives; released (and the file removed) on stop, or
    by the kernel when the process dies."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def _sidecar_dir(label: str) -> tuple[Path, _HeldLock]:
    """A private directory for a sidecar's token under ``$TMPDIR/pilotfish-sidecars``, with a
    lock held while the pod lives. Directories whose lock nobody holds (their pod's process
    died without stop()) are removed first."""
    base = Path(tempfile.gettempdir()) / f"pilotfish-sidecars-{os.getuid()}"
    base.mkdir(mode=0o711, exist_ok=True)
    for lock in base.glob("*.lock"):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live pod's
        else:
            shutil.rmtree(base / lock.stem, ignore_errors=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    # the lock is taken before its name appears (a rename), so no pruner sees it unheld
    fd, tmp = tempfile.mkstemp(prefix=".new-", dir=base)
    fcntl.flock(fd, fcntl.LOCK_EX)
    d = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=base))
    path = base / f"{d.name}.lock"
    os.rename(tmp, path)
    return d, _HeldLock(path, fd)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- container specs

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(s: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, undefined references
    are left as written, ``$$`` is a literal ``$``."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, s)


class _ConfigError(ValueError):
    pass


@dataclass(eq=False)
class _Ctr:
    name: str
    spec: dict[str, Any]
    sidecar: bool = False
    sup: Supervisor | None = None
    config_error: str = ""
    ready: bool = False
    started_ok: bool = True  # the startup probe succeeded (or there is none)
    probes: list[asyncio.Task] = field(default_factory=list)
    named_ports: dict[str, int] = field(default_factory=dict)


def _int_field(v: Any, what: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _ConfigError(f"{what}: {v!r} is not an integer")
    return v


class PodRunner:
    """Runs one pod (see the module docstring).

    ``pod_spec`` is the pod template's ``spec`` as a mapping. ``log_dir`` is the pod's own
    directory: each container logs to ``<log_dir>/<container>.log`` (the sidecar to
    ``istio-proxy.log``). ``hosts`` (name -> address) goes into the pod's /etc/hosts with the
    pod's own name; ``services`` (``[(cluster_ip, port, [(ip, port), ...])]``) becomes DNAT
    rules when the pod has no sidecar; :meth:`update_network` changes both later.
    ``backoff_base`` is the crash-loop backoff's first delay (10 s); ``grace`` overrides
    ``terminationGracePeriodSeconds``.
    """

    def __init__(self, namespace: str, name: str, pod_spec: Mapping[str, Any],
                 labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None,
                 service_account: str | None = None, network: PodNetwork | None = None,
                 sidecar: SidecarSpec | None = None, workdir: str | Path = ".",
                 log_dir: str | Path = ".", on_status: Callable[[PodStatus], None] | None = None, *,
                 hosts: Mapping[str, str] | None = None,
                 services: Sequence[tuple[str, int, Sequence[tuple[str, int]]]] | None = None,
                 backoff_base: float = 10.0, grace: float | None = None,
                 loopback: LoopbackAllocator | None = None) -> None:
        self.namespace = namespace
        self.name = name
        self.key = f"{namespace}/{name}"
        self.spec = dict(pod_spec)
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.service_account = service_account or self.spec.get("serviceAccountName") or "default"
        self.network = network
        self.sidecar = sidecar
        self.workdir = Path(workdir).resolve()
        self.log_dir = Path(log_dir)
        self.on_status = on_status
        self.hosts = dict(hosts or {})
        self.services = [(v, p, list(e)) for v, p, e in (services or [])]
        self.backoff_base = backoff_base
        tgp = self.spec.get("terminationGracePeriodSeconds")
        self.grace = float(grace if grace is not None else (tgp if isinstance(tgp, int | float) else DEFAULT_GRACE))
        self.restart_policy = str(self.spec.get("restartPolicy") or "Always")
        self._loopback = loopback or _DEFAULT_LOOPBACK
        self.uid = str(uuid.uuid4())  # metadata.uid
        self.ip: str | None = None
        self.net: PodNet | None = None
        self.app_ports: dict[int, int] = {}  # explicit mode: containerPort -> where the app listens
        self.admin_port: int | None = None
        self.start_time: float | None = None
        self.sidecar_drained = False  # the sidecar took POST /quitquitquit when the pod stopped
        self._lease: LoopbackLease | None = None
        self._run_dir: Path | None = None
        self._run_lock: _HeldLock | None = None
        self._ctrs: list[_Ctr] = []
        self._sidecar: _Ctr | None = None
        self._started = False  # app containers launched
        self._terminating = False
        self._deleted = False
        self._failed = ""  # set-up failure reason
        self._message = ""
        self._last: PodStatus | None = None
        self._tasks: set[asyncio.Task] = set()
        self._finishing = False
        self._starting: asyncio.Event | None = None  # set when start() has returned
        self._net_lock: asyncio.Lock | None = None
        for c in self.spec.get("containers") or []:
            if not isinstance(c, Mapping) or not c.get("name"):
                raise ValueError(f"pod {self.key}: every container needs a name")
            ctr = _Ctr(name=str(c["name"]), spec=dict(c))
            for p in c.get("ports") or []:
                if isinstance(p, Mapping) and p.get("name") and isinstance(p.get("containerPort"), int):
                    ctr.named_ports[str(p["name"])] = p["containerPort"]
            self._ctrs.append(ctr)
        if not self._ctrs:
            raise ValueError(f"pod {self.key}: no containers")
        if sidecar is not None:
            if any(c.name == SIDECAR_NAME for c in self._ctrs):
                raise ValueError(f"pod {self.key}: a container is already named {SIDECAR_NAME}")
            self._sidecar = _Ctr(name=SIDECAR_NAME, spec={}, sidecar=True)
        if self.spec.get("initContainers"):
            self._message = "initContainers are not supported by the local runtime and were ignored"

    # ------------------------------------------------------------------ queries

    @property
    def explicit(self) -> bool:
        return self.network is None

    @property
    def workload_ports(self) -> list[int]:
        out: list[int] = []
        for c in self._ctrs:
            for p in c.spec.get("ports") or []:
                cp = p.get("containerPort") if isinstance(p, Mapping) else None
                if isinstance(cp, int) and cp not in out and (p.get("protocol") or "TCP") == "TCP":
                    out.append(cp)
        return out

    def log_path(self, container: str) -> Path:
        return self.log_dir / f"{container}.log"

    def supervisor(self, container: str) -> Supervisor | None:
        for c in self._all():
            if c.name == container:
                return c.sup
        raise KeyError(container)

    def _all(self) -> list[_Ctr]:
        return ([self._sidecar] if self._sidecar else []) + self._ctrs

    # ------------------------------------------------------------------ status

    def status(self) -> PodStatus:
        cs = tuple(self._container_status(c) for c in self._all())
        apps = [c for c in self._ctrs]
        if self._failed:
            phase = "Failed"
        elif not self._started or any(c.sup is None for c in apps):
            phase = "Pending"
        elif all(c.sup.done for c in apps if c.sup) and not self._terminating:
            phase = "Succeeded" if all(c.sup.exit_code == 0 for c in apps if c.sup) else "Failed"
        else:
            phase = "Running"
        if self._deleted:
            codes = [c.sup.exit_code for c in apps if c.sup]
            phase = "Succeeded" if codes and all(x == 0 for x in codes) else "Failed"
        ready = phase == "Running" and not self._terminating and all(c.ready for c in cs)
        reason = phase
        for c in reversed(cs):
            if c.state != "Running":
                reason = c.state
        if reason == "Completed" and any(c.state == "Running" for c in cs):
            reason = "Running"
        if self._failed:
            reason = self._failed
        if self._terminating:
            reason = "Terminating"
        return PodStatus(namespace=self.namespace, name=self.name, phase=phase, ready=ready, ip=self.ip,
                         containers=cs, start_time=self.start_time, reason=reason, message=self._message,
                         deleted=self._deleted)

    def _container_status(self, c: _Ctr) -> ContainerStatus:
        sup = c.sup
        if c.config_error:
            return ContainerStatus(c.name, "CreateContainerConfigError", False, 0, message=c.config_error, sidecar=c.sidecar)
        if sup is None:
            return ContainerStatus(c.name, "ContainerCreating", False, 0, sidecar=c.sidecar)
        state = "Running" if sup.state == "Running" else (sup.reason or sup.state)
        return ContainerStatus(c.name, state, sup.state == "Running" and c.ready and c.started_ok, sup.restarts,
                               exit_code=sup.exit_code, started_at=sup.container.started_at,
                               message=sup.message, sidecar=c.sidecar)

    def _emit(self) -> None:
        st = self.status()
        if st == self._last:
            return
        self._last = st
        if self.on_status is not None:
            try:
                self.on_status(st)
            except Exception:
                log.exception("pod %s: on_status failed", self.key)
        if (self._started and not self._terminating and not self._finishing and not self._deleted
                and self._sidecar is not None and self._sidecar.sup is not None
                and all(c.sup is not None and c.sup.done for c in self._ctrs)):
            # every app container is done for good: like a native sidecar, the proxy goes too
            self._finishing = True
            self._spawn(self._stop_sidecar())

    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        """Network, sidecar (waiting for it to be ready), then the app containers and their
        probes. Raises :class:`PodError` if the network cannot be made or the sidecar is not
        ready within ``sidecar.ready_timeout`` (the pod is then Failed); call :meth:`stop`
        in every case to release what was made."""
        if self.start_time is not None:
            raise RuntimeError(f"pod {self.key} was already started (a PodRunner runs once)")
        self.start_time = time.time()
        self._starting = asyncio.Event()
        try:
            await self._start()
        finally:
            self._starting.set()

    async def _start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._emit()
        try:
            await self._setup_network()
            envs = {c.name: self._prepare(c) for c in self._ctrs}
            if self._sidecar is not None:
                await self._start_sidecar()
            for c in self._ctrs:
                if self._terminating:
                    raise PodError(f"pod {self.key} was stopped while starting")
                if c.config_error:
                    continue
                argv, env, cwd, uid, gid = envs[c.name]
                self._launch(c, Container(c.name, argv, env, cwd, self.log_path(c.name),
                                          self._netns_prefix(), uid, gid))
            for c in self._ctrs:
                if c.sup is not None:
                    await c.sup.started()
            self._started = True
            self._emit()
        except PodError as e:
            self._fail("SidecarNotReady" if self._sidecar and not self._sidecar.ready else "StartError", str(e))
            raise
        except Exception as e:
            self._fail("StartError", f"{type(e).__name__}: {e}")
            raise PodError(f"pod {self.key}: {e}") from e

    def _fail(self, reason: str, message: str) -> None:
        if not self._terminating:
            self._failed = reason
            self._message = message
            self._emit()

    def _netns_prefix(self) -> list[str]:
        return self.network.exec_argv(self.key, []) if self.network is not None else []

    async def _setup_network(self) -> None:
        if self.network is None:
            self._lease = self._loopback.acquire()
            self.ip = self._lease.ip
            for c in self._ctrs:
                first = next((p.get("containerPort") for p in c.spec.get("ports") or []
                              if isinstance(p, Mapping) and isinstance(p.get("containerPort"), int)), None)
                if first is not None and first not in self.app_ports:
                    self.app_ports[first] = _free_port()
            return
        self.net = await asyncio.to_thread(self.network.add_pod, self.key)
        self.ip = self.net.ip
        self._emit()
        await self._write_network_config()
        if self.sidecar is not None:
            await asyncio.to_thread(self.network.intercept, self.key, **self._intercept_args())

    async def _write_network_config(self) -> None:
        assert self.network is not None and self.ip is not None
        if self._net_lock is None:
            self._net_lock = asyncio.Lock()
        async with self._net_lock:  # updates land in the order they were asked for
            hosts = {**self.hosts, self.name: self.ip}
            await asyncio.to_thread(self.network.write_hosts, self.key, hosts)
            if self.sidecar is None:
                await asyncio.to_thread(self.network.service_dnat, self.key, list(self.services))

    async def update_network(self, hosts: Mapping[str, str] | None = None,
                             services: Sequence[tuple[str, int, Sequence[tuple[str, int]]]] | None = None) -> None:
        """New /etc/hosts entries and/or ClusterIP DNAT rules (for a pod without sidecar);
        ``None`` keeps the current ones. Nothing to do in explicit mode."""
        if hosts is not None:
            self.hosts = dict(hosts)
        if services is not None:
            self.services = [(v, p, list(e)) for v, p, e in services]
        if self.network is not None and self.net is not None and not self._deleted:
            await self._write_network_config()

    def _intercept_args(self) -> dict[str, Any]:
        """Istio's traffic.sidecar.istio.io annotations, as its init container reads them."""
        a = self.annotations

        def ports(key: str) -> list[int]:
            out = []
            for tok in (a.get(key) or "").split(","):
                tok = tok.strip()
                if tok:
                    if not tok.isdigit():
                        raise PodError(f"pod {self.key}: annotation {key}: {tok!r} is not a port")
                    out.append(int(tok))
            return out

        include = a.get(ISTIO_INCLUDE_INBOUND, "*").strip()
        assert self.sidecar is not None
        return {
            "proxy_uid": self.sidecar.proxy_uid,
            "inbound_ports": None if include == "*" else ports(ISTIO_INCLUDE_INBOUND),
            "exclude_inbound_ports": [15000, 15020, 15021, 15090, *ports(ISTIO_EXCLUDE_INBOUND)],
            "exclude_outbound_ports": ports(ISTIO_EXCLUDE_OUTBOUND),
            "exclude_outbound_cidrs": [c.strip() for c in (a.get(ISTIO_EXCLUDE_OUTBOUND_RANGES) or "").split(",")
                                       if c.strip()],
        }

    def _field(self, path: str) -> str:
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
        if m:
            return (self.labels if m.group(1) == "labels" else self.annotations).get(m.group(2), "")
        values = {
            "metadata.name": self.name, "metadata.namespace": self.namespace, "metadata.uid": self.uid,
            "spec.serviceAccountName": self.service_account, "spec.nodeName": socket.gethostname(),
            "status.podIP": self.ip or "", "status.podIPs": self.ip or "",
            "status.hostIP": self.network.gateway if self.network is not None else "127.0.0.1",
        }
        if path not in values:
            raise _ConfigError(f"fieldRef {path!r} is not supported")
        return values[path]

    def _prepare(self, c: _Ctr) -> tuple[list[str], dict[str, str], str, int | None, int | None] | None:
        """argv, env, cwd, uid, gid of an app container; a problem marks it
        CreateContainerConfigError (as the kubelet does) instead of failing the pod."""
        s = c.spec
        try:
            env: dict[str, str] = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "HOME": os.environ.get("HOME") or "/",
                                   "HOSTNAME": self.name, "PYTHONUNBUFFERED": "1"}
            if s.get("envFrom"):
                raise _ConfigError("envFrom is not supported by the local runtime")
            for e in s.get("env") or []:
                if not isinstance(e, Mapping) or not e.get("name"):
                    raise _ConfigError("env entries need a name")
                n = str(e["name"])
                if "valueFrom" in e:
                    vf = e["valueFrom"] or {}
                    if "fieldRef" in vf:
                        env[n] = self._field(str((vf["fieldRef"] or {}).get("fieldPath", "")))
                    else:
                        raise _ConfigError(f"env {n}: valueFrom {', '.join(vf) or '{}'} is not supported (only fieldRef)")
                else:
                    env[n] = expand_vars(str(e.get("value", "")), env)
            if self.explicit:
                first = next((p.get("containerPort") for p in s.get("ports") or []
                              if isinstance(p, Mapping) and isinstance(p.get("containerPort"), int)), None)
                if first is not None:
                    env["PORT"] = str(self.app_ports[first])
                if self.sidecar is not None:
                    proxy = f"http://{self.ip}:15001"
                    env.update(HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY="localhost,127.0.0.1",
                               no_proxy="localhost,127.0.0.1")
            cmd = [str(x) for x in s.get("command") or []]
            args = [str(x) for x in s.get("args") or []]
            if not cmd:
                raise _ConfigError("no command: the local runtime runs command/args, it has no images")
            argv = [expand_vars(x, env) for x in cmd + args]
            wd = s.get("workingDir")
            cwd = str(self.workdir / wd) if wd else str(self.workdir)
            sc = s.get("securityContext") or {}
            psc = self.spec.get("securityContext") or {}
            uid = _int_field(sc.get("runAsUser", psc.get("runAsUser")), "securityContext.runAsUser")
            gid = _int_field(sc.get("runAsGroup", psc.get("runAsGroup")), "securityContext.runAsGroup")
            if os.geteuid() != 0:
                uid = gid = None  # cannot switch users: run as ourselves
            elif uid is None and gid is not None:
                uid = 0
            return argv, env, cwd, uid, gid
        except _ConfigError as e:
            c.config_error = str(e)
            return None

    def _launch(self, c: _Ctr, container: Container) -> None:
        c.sup = Supervisor(container, restart_policy=self.restart_policy if not c.sidecar else "Always",
                           backoff=Backoff(base=self.backoff_base), on_change=self._emit,
                           on_start=lambda: self._on_start(c), on_exit=lambda code: self._on_exit(c))
        c.sup.start().add_done_callback(lambda _t: self._emit())  # done for good: phase may change

    # ------------------------------------------------------------------ probes

    def _port_map(self, port: int) -> tuple[str, int]:
        if port in self.app_ports:  # explicit mode: straight to the app, as Istio's probe rewrite
            return "127.0.0.1", self.app_ports[port]
        return self.ip or "127.0.0.1", port

    def _on_start(self, c: _Ctr) -> None:
        for t in c.probes:
            t.cancel()
        c.probes = []
        if c.sidecar:
            c.ready = False
            c.probes.append(self._spawn(self._sidecar_probe(c)))
            return
        s = c.spec
        probes: dict[str, Probe] = {}
        try:
            for kind in ("startup", "readiness", "liveness"):
                spec = s.get(f"{kind}Probe")
                if spec:
                    probes[kind] = Probe.from_spec(
                        spec, kind=kind, host=self.ip or "127.0.0.1", ports=c.named_ports,
                        port_map=self._port_map if self.explicit else None,
                        exec_prefix=self._exec_prefix(c), env=c.sup.container.env if c.sup else None,
                        cwd=str(self.workdir))
        except ProbeError as e:
            assert c.sup is not None
            c.sup.message = str(e)
            probes = {}
        c.started_ok = "startup" not in probes
        c.ready = "readiness" not in probes and c.started_ok

        def after_startup() -> None:
            if "readiness" in probes:
                c.probes.append(self._spawn(probes["readiness"].run(readiness)))
            else:
                c.ready = True
            if "liveness" in probes:
                c.probes.append(self._spawn(probes["liveness"].run(liveness)))

        def readiness(ok: bool) -> None:
            c.ready = ok
            self._emit()

        def liveness(ok: bool) -> None:
            if not ok and c.sup is not None:
                kind = "Liveness" if c.started_ok else "Startup"
                self._spawn(c.sup.restart(self.grace, f"{kind} probe failed; container will be restarted"))

        def startup(ok: bool) -> None:
            if ok:
                c.started_ok = True
                after_startup()
                self._emit()
            else:
                liveness(False)

        if "startup" in probes:
            c.probes.append(self._spawn(probes["startup"].run(startup)))
        else:
            after_startup()

    def _exec_prefix(self, c: _Ctr) -> list[str]:
        """Exec probes run in the pod, as the container's user."""
        if c.sup is None or c.sup.container.uid is None:
            return self._netns_prefix()
        return Container(c.name, ["true"], {}, ".", ".", self._netns_prefix(), c.sup.container.uid,
                         c.sup.container.gid).full_argv()[:-1]

    def _on_exit(self, c: _Ctr) -> None:
        for t in c.probes:
            t.cancel()
        c.probes = []
        c.ready = False

    # ------------------------------------------------------------------ the sidecar

    async def _admin_connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.network is not None:
            return await self.network.open_connection(self.key, host, port)
        return await asyncio.open_connection(host, port)

    async def admin_request(self, method: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """One request to the sidecar's admin endpoint (in the pod: its own 127.0.0.1)."""
        if self.admin_port is None:
            raise PodError(f"pod {self.key} has no sidecar")

        async def go() -> tuple[int, bytes]:
            reader, writer = await self._admin_connect("127.0.0.1", self.admin_port)
            try:
                writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                             f"Connection: close\r\n\r\n".encode())
                await writer.drain()
                data = await reader.read()
            finally:
                writer.close()
            head, _, body = data.partition(b"\r\n\r\n")
            parts = head.split(None, 2)
            return (int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0), body

        return await asyncio.wait_for(go(), timeout)

    def _sidecar_argv(self, token: Path) -> list[str]:
        sc = self.sidecar
        assert sc is not None and self.ip is not None and self.admin_port is not None
        argv = [sc.python, "-m", "pilotfish", "proxy", "--discovery", sc.discovery_address,
                "--token-file", str(token), "--role", "sidecar",
                "--interception", "NONE" if self.explicit else "REDIRECT",
                "--pod-name", self.name, "--namespace", self.namespace,
                "--service-account", self.service_account, "--ip", self.ip,
                "--admin-port", str(self.admin_port)]
        for k, v in sorted(self.labels.items()):
            argv += ["--label", f"{k}={v}"]
        for p in self.workload_ports:
            argv += ["--workload-port", str(p)]
        for p, a in sorted(self.app_ports.items()):
            argv += ["--app-port", f"{p}:{a}"]
        if self.annotations:
            argv += ["--node-json", json.dumps({"annotations": self.annotations}, sort_keys=True)]
        return argv + list(sc.extra_args)

    async def _start_sidecar(self) -> None:
        sc = self.sidecar
        c = self._sidecar
        assert sc is not None and c is not None
        as_proxy = self.network is not None and os.geteuid() == 0
        self._run_dir, self._run_lock = _sidecar_dir(f"{self.namespace}_{self.name}"[:60])
        token = self._run_dir / "token"
        try:
            shutil.copyfile(sc.token_file, token)
        except OSError as e:
            raise PodError(f"pod {self.key}: cannot read the sidecar token {sc.token_file}: {e.strerror}")
        os.chmod(token, 0o400)
        if as_proxy:
            os.chown(self._run_dir, sc.proxy_uid, sc.proxy_uid)
            os.chown(token, sc.proxy_uid, sc.proxy_uid)
        self.admin_port = sc.admin_port if not self.explicit else _free_port()
        # the package's own location, so ``-m pilotfish`` works from a source tree too
        source = str(Path(__file__).resolve().parents[2])
        env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "HOME": str(self._run_dir), "PYTHONPATH": source,
               **sc.env}
        self._launch(c, Container(SIDECAR_NAME, self._sidecar_argv(token), env, self._run_dir,
                                  self.log_path(SIDECAR_NAME), self._netns_prefix(),
                                  sc.proxy_uid if as_proxy else None))
        deadline = time.monotonic() + sc.ready_timeout
        while True:
            if self._terminating:
                raise PodError(f"pod {self.key} was stopped while its sidecar was starting")
            try:
                status, _ = await self.admin_request("GET", "/ready", timeout=1.0)
                if status == 200:
                    break
            except (TimeoutError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise PodError(f"pod {self.key}: sidecar not ready after {sc.ready_timeout:g}s "
                               f"(see {self.log_path(SIDECAR_NAME)})")
            await asyncio.sleep(0.1)
        c.ready = True
        self._emit()

    async def _sidecar_probe(self, c: _Ctr) -> None:
        """The sidecar's readiness: its admin /ready, every 2 s once it answered (0.1 s before)."""
        check = http_get_check("127.0.0.1", self.admin_port or ADMIN_PORT, "/ready", connect=self._admin_connect)
        fails = 0
        while True:
            try:
                ok = await asyncio.wait_for(check(), 1.0)
            except (TimeoutError, OSError, ValueError):
                ok = False
            fails = 0 if ok else fails + 1
            new = ok or (c.ready and fails < 3)
            if new != c.ready:
                c.ready = new
                self._emit()
            await asyncio.sleep(SIDECAR_READY_PERIOD if c.ready else 0.1)

    async def _stop_sidecar(self, grace: float | None = None) -> None:
        """Drain: POST /quitquitquit, wait for the proxy to exit, then SIGTERM/SIGKILL."""
        c = self._sidecar
        if c is None or c.sup is None:
            return
        sup = c.sup
        sup.retire()  # no restart once it exits
        g = self.grace if grace is None else grace
        if sup.container.alive:
            with contextlib.suppress(OSError, TimeoutError, ValueError, PodError):
                status, _ = await self.admin_request("POST", "/quitquitquit", timeout=1.0)
                self.sidecar_drained = status == 200
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sup.container.wait(), g)
        await sup.stop(min(g, 5.0))
        self._on_exit(c)
        self._emit()

    # ------------------------------------------------------------------ stop

    async def stop(self, grace: float | None = None) -> PodStatus:
        """App containers first (SIGTERM, SIGKILL after the grace period), then the sidecar
        drains (POST /quitquitquit, then waits, then kills), then the network goes. Safe to
        call at any point, more than once. Returns (and reports) the final status."""
        if self._deleted:
            return self.status()
        self._terminating = True
        self._emit()
        if self._starting is not None:
            await self._starting.wait()  # an unfinished start() gives up at its next step
        g = self.grace if grace is None else grace
        apps = [c for c in self._ctrs if c.sup is not None]
        await asyncio.gather(*(c.sup.stop(g) for c in apps if c.sup), return_exceptions=True)
        for c in apps:
            self._on_exit(c)
        await self._stop_sidecar(g)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.network is not None and self.net is not None:
            await asyncio.to_thread(self.network.remove_pod, self.key)
        elif self.network is not None:
            with contextlib.suppress(Exception):  # start() may have failed half-way in add_pod
                await asyncio.to_thread(self.network.remove_pod, self.key)
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None
        self._deleted = True
        self._terminating = False
        self._last = None
        self._emit()
        return self.status()
