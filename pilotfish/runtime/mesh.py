"""The mesh on one machine: what ``pilotfish up`` runs, in one process.

::

    pilotfish up ─┬─ control plane (in process): MeshStore ─► generation ─► discovery, HTTP API
                  ├─ controller (in process): Deployments ─► PodRunners ─► Pod objects + status
                  │     └─ per pod: network namespace, istio-proxy sidecar, app processes
                  └─ ingress gateway: a `pilotfish proxy --role gateway` process on the host,
                        istio-system/istio-ingressgateway-…, label istio=ingressgateway

**Modes.** With root, ``ip`` and ``iptables``, every pod gets its own network namespace on a
bridge (``--pod-cidr``) and Istio's interception rules (REDIRECT); the control plane's
discovery port listens on the bridge's address so that sidecars in their namespaces reach it.
Otherwise (or with ``--explicit``) the mesh runs in **explicit proxy mode**, and ``up`` says
so: pods share the machine's network, each with a loopback address ``127.0.1.N``; apps get
``$PORT`` to listen on and ``$HTTP_PROXY`` pointing at their sidecar. What that mode cannot do
is listed in ``pilotfish up --help`` (:data:`pilotfish.cli.up_cmd.EXPLICIT_MODE_LIMITS`) and
printed when the mesh starts in that mode.

**Placement.** Two things about where proxies listen depend on this machine, not on the mesh
configuration, so the control plane's output is adjusted here (:class:`Placement`) rather
than in ``translate()``: the ingress gateway's listeners bind the gateway address
(``--gateway-address``, 127.0.0.1 by default) instead of 0.0.0.0, on the port each Gateway
server declares or the one ``--port-map`` gives it (80:8080); and an explicit-mode sidecar's
HTTP proxy listener binds its pod's own loopback address instead of 127.0.0.1:15001, so that
the sidecars of several pods can share the machine.

**State** (``--state-dir``): the configuration (``config/``), the token, ``up.pid`` and
``up.json`` (what runs and where, read by ``pilotfish down``), ``up.log`` (with ``-d``), pod
logs (``logs/<namespace>/<pod>/<container>.log``), the network's records (``network/``) and
the process groups started (``pids.json``). A run that died without stopping leaves these
behind; the next ``up`` (or ``down``) removes what they describe.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.client
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from pilotfish.controlplane.server import ControlPlane, load_or_create_token
from pilotfish.proxy import model
from pilotfish.runtime.controller import (
    Controller,
    PodHandle,
    kill_recorded,
    pod_status_doc,
    random_suffix,
    template_hash,
)
from pilotfish.runtime.ipam import DEFAULT_SERVICE_CIDR, MeshStore

log = logging.getLogger("pilotfish.runtime.mesh")

__all__ = [
    "Mesh", "MeshError", "MeshOptions", "Placement", "MeshControlPlane",
    "read_info", "pid_alive", "leftovers", "default_workdir",
]

DEFAULT_POD_CIDR = "10.244.0.0/16"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_APP = "istio-ingressgateway"
GATEWAY_LABELS = {"app": GATEWAY_APP, "istio": "ingressgateway"}
GATEWAY_SA = "istio-ingressgateway-service-account"
PID_FILE = "up.pid"
INFO_FILE = "up.json"
LOG_FILE = "up.log"
PIDS_FILE = "pids.json"

class MeshError(RuntimeError):
    """The mesh cannot start (already running, ports in use...)."""


def default_workdir() -> Path:
    """Where containers run: the Pilotfish checkout when there is one (bookinfo's manifests
    use paths relative to it), else the current directory."""
    root = Path(__file__).resolve().parents[2]
    if (root / "samples").is_dir() and (root / "pilotfish").is_dir():
        return root
    return Path.cwd()


@dataclass
class MeshOptions:
    state_dir: Path
    api: tuple[str, int] = ("127.0.0.1", 15080)
    discovery_port: int = 15010
    gateway_address: str = "127.0.0.1"
    port_map: dict[int, int] = field(default_factory=dict)
    pod_cidr: str = DEFAULT_POD_CIDR
    service_cidr: str = DEFAULT_SERVICE_CIDR
    bridge: str = "pf0"
    prefix: str = "pf"
    explicit: bool = False
    workdir: Path = field(default_factory=default_workdir)
    debounce: float = 0.1
    backoff_base: float = 10.0


# --------------------------------------------------------------------------- placement


class Placement:
    """Where this machine's proxies listen (see the module docstring)."""

    def __init__(self, gateway_address: str, port_map: dict[int, int]) -> None:
        self.gateway_address = gateway_address
        self.port_map = dict(port_map)
        # original listener -> moved copy (keeps the discovery encoder's identity cache useful)
        self._moved: dict[tuple[int, str, int], tuple[model.Listener, model.Listener]] = {}

    @staticmethod
    def is_mesh_gateway(node: model.Node) -> bool:
        return (node.role == "gateway" and node.namespace == GATEWAY_NAMESPACE
                and node.name.startswith(GATEWAY_APP + "-") and node.labels.get("istio") == "ingressgateway")

    def _move(self, lst: model.Listener, address: str, port: int) -> model.Listener:
        key = (id(lst), address, port)
        hit = self._moved.get(key)
        if hit is not None and hit[0] is lst:
            return hit[1]
        if len(self._moved) > 4096:
            self._moved.clear()
        moved = msgspec.structs.replace(lst, name=f"{address}_{port}", address=address, port=port)
        self._moved[key] = (lst, moved)
        return moved

    def adjust(self, node: model.Node, cfg: model.ProxyConfig) -> model.ProxyConfig:
        if self.is_mesh_gateway(node):
            listeners = [self._move(x, self.gateway_address, self.port_map.get(x.port, x.port))
                         if x.address in ("0.0.0.0", "::") else x for x in cfg.listeners]
        elif node.role != "gateway" and node.interception == "NONE" and node.ips and node.ips[0].startswith("127."):
            ip = node.ips[0]
            listeners = [self._move(x, ip, x.port) if (x.address, x.port) == ("127.0.0.1", 15001) else x
                         for x in cfg.listeners]
        else:
            return cfg
        out = copy.copy(cfg)
        out.listeners = sorted(listeners, key=lambda x: x.name)
        return out


class MeshControlPlane(ControlPlane):
    """The control plane, with the machine's placement applied to what it sends and a hook
    called with every new generation (the controller rewrites hosts files and DNAT rules)."""

    def __init__(self, *args: Any, placement: Placement, on_rebuild: Callable[[Any], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.placement = placement
        self.on_rebuild = on_rebuild

    def compute(self, node: model.Node) -> model.ProxyConfig:
        return self.placement.adjust(node, super().compute(node))

    def rebuild(self, reason: str = "config change") -> bool:
        changed = super().rebuild(reason)
        if changed and self.on_rebuild is not None:
            try:
                self.on_rebuild(self.generation)
            except Exception:
                log.exception("on_rebuild failed")
        return changed


# --------------------------------------------------------------------------- the gateway


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Gateway:
    """The ingress gateway: a Pilotfish proxy in the gateway role on the host, restarted with
    the kubelet's backoff if it exits, reported as the pod
    ``istio-system/istio-ingressgateway-<hash>-<suffix>``."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        h = template_hash({"gateway": mesh.opts.gateway_address, "ports": sorted(mesh.opts.port_map.items())})
        self.name = f"{GATEWAY_APP}-{h}-{random_suffix()}"
        self.log_path = mesh.opts.state_dir / "logs" / GATEWAY_NAMESPACE / self.name / "istio-proxy.log"
        self.admin_port = 0
        self.sup: Any = None
        self.ready = False
        self.started = time.time()
        self._probe: asyncio.Task | None = None
        self.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    @property
    def key(self) -> str:
        return f"{GATEWAY_NAMESPACE}/{self.name}"

    def argv(self) -> list[str]:
        m = self.mesh
        argv = [sys.executable, "-m", "pilotfish", "proxy", "--discovery", m.discovery_address,
                "--token-file", str(m.opts.state_dir / "token"), "--role", "gateway",
                "--pod-name", self.name, "--namespace", GATEWAY_NAMESPACE,
                "--service-account", GATEWAY_SA, "--ip", m.opts.gateway_address,
                "--admin-port", str(self.admin_port), "--discovery-backoff-max", "1"]
        for k, v in sorted(GATEWAY_LABELS.items()):
            argv += ["--label", f"{k}={v}"]
        return argv

    async def start(self) -> None:
        from pilotfish.runtime.process import Backoff, Container, Supervisor

        self.admin_port = _free_port()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
               "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        c = Container("istio-proxy", self.argv(), env, self.mesh.opts.state_dir, self.log_path)
        self.sup = Supervisor(c, restart_policy="Always", backoff=Backoff(base=self.mesh.opts.backoff_base),
                              on_change=self.publish, on_exit=lambda _code: self._set_ready(False))
        self.sup.start()
        self._probe = asyncio.get_running_loop().create_task(self._probe_loop(), name="gateway-probe")
        self.publish()

    def pid(self) -> list[int]:
        c = self.sup.container if self.sup is not None else None
        return [c.pid] if c is not None and c.alive and c.pid else []

    async def _probe_loop(self) -> None:
        while True:
            ok = await asyncio.to_thread(self._ready_check)
            self._set_ready(ok)
            await asyncio.sleep(2.0 if ok else 0.1)

    def _ready_check(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=1.0)
        try:
            conn.request("GET", "/ready")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _set_ready(self, ok: bool) -> None:
        if ok != self.ready:
            self.ready = ok
            self.publish()

    def status(self) -> Any:
        from pilotfish.runtime.pod import ContainerStatus, PodStatus

        sup = self.sup
        if sup is None:
            cs = ContainerStatus("istio-proxy", "ContainerCreating", False, 0, sidecar=True)
        else:
            state = "Running" if sup.state == "Running" else (sup.reason or sup.state)
            cs = ContainerStatus("istio-proxy", state, sup.state == "Running" and self.ready, sup.restarts,
                                 exit_code=sup.exit_code, started_at=sup.container.started_at,
                                 message=sup.message, sidecar=True)
        phase = "Running" if cs.state in ("Running", "CrashLoopBackOff", "Error") and sup is not None else "Pending"
        return PodStatus(namespace=GATEWAY_NAMESPACE, name=self.name, phase=phase, ready=cs.ready,
                         ip=self.mesh.opts.gateway_address, containers=(cs,), start_time=self.started,
                         reason="Running" if cs.state == "Running" else cs.state)

    def doc(self) -> dict[str, Any]:
        st = self.status()
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name, "namespace": GATEWAY_NAMESPACE, "labels": dict(GATEWAY_LABELS),
                "annotations": {"pilotfish.io/runtime": "local",
                                "pilotfish.io/gateway-address": self.mesh.opts.gateway_address},
            },
            "spec": {
                "nodeName": self.mesh.node_name,
                "serviceAccountName": GATEWAY_SA,
                "containers": [{"name": "istio-proxy", "image": "pilotfish/proxy", "args": ["proxy", "router"]}],
            },
            "status": pod_status_doc(st, self.mesh.host_ip, ["istio-proxy"]),
        }

    def publish(self) -> None:
        if self.mesh.controller is not None:
            self.mesh.controller.publish_static(self.doc())
        self.mesh._pod_event_line(self.key, self.status())

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self.sup is not None:
            await self.sup.stop(10.0)


# --------------------------------------------------------------------------- state files


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
            return False  # exited; its parent has not reaped it
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"pilotfish" in cmd


def read_info(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def leftovers(info: dict[str, Any] | None, state_dir: Path) -> list[str]:
    """What a stopped mesh would have left behind: network namespaces, links, iptables rules
    and chains of its network, and processes it started. Empty when clean."""
    import shutil
    import subprocess

    found: list[str] = []
    net = (info or {}).get("network") or {}
    prefix, bridge = net.get("prefix"), net.get("bridge")
    if (state_dir / "network" / "network.json").exists():
        found.append(f"network records {state_dir / 'network' / 'network.json'}")
    if prefix and bridge and shutil.which("ip"):
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        found += [f"netns {ln.split()[0]}" for ln in r.stdout.splitlines() if ln.startswith(f"{prefix}-")]
        r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
        for ln in r.stdout.splitlines():
            parts = ln.split(":")
            if len(parts) > 1:
                name = parts[1].strip().split("@")[0]
                if name == bridge or (name.startswith(f"{prefix}v") and len(name) == len(prefix) + 9):
                    found.append(f"link {name}")
        if os.geteuid() == 0 and shutil.which("iptables-save"):
            r = subprocess.run(["iptables-save"], capture_output=True, text=True)
            found += [f"iptables: {ln}" for ln in r.stdout.splitlines()
                      if f"PF-FWD-{bridge}" in ln or (f" {bridge} " in ln and not ln.startswith("#"))]
    from pilotfish.runtime.controller import recorded_pids

    found += [f"process {p}" for p in recorded_pids(state_dir / PIDS_FILE)]
    return found


# --------------------------------------------------------------------------- the mesh


class Mesh:
    """Everything ``pilotfish up`` runs (see the module docstring)."""

    def __init__(self, opts: MeshOptions, say: Callable[[str], None] | None = None,
                 explicit_notice: str = "") -> None:
        self.opts = opts
        self.say = say or (lambda s: print(s, flush=True))
        self.explicit_notice = explicit_notice  # what explicit mode cannot do, said when it starts
        self.mode = "netns"
        self.mode_reason = ""
        self.network: Any = None
        self.store: MeshStore | None = None
        self.cp: MeshControlPlane | None = None
        self.controller: Controller | None = None
        self.gateway: Gateway | None = None
        self.sidecar_spec: Any = None
        self.discovery_address = ""
        self.node_name = socket.gethostname()
        self.host_ip = "127.0.0.1"
        self.t0 = time.monotonic()
        self._last_line: dict[str, str] = {}
        self.show_events = True
        self._started = False

    # ------------------------------------------------------------------ info

    def gateway_ports(self) -> list[int]:
        """The host ports the gateway listens on (from the Gateways that select it)."""
        ports: set[int] = set()
        if self.store is None:
            return []
        for so in self.store.list("Gateway"):
            spec = so.data.get("spec") or {}
            sel = spec.get("selector") or {}
            if not sel or any(GATEWAY_LABELS.get(k) != v for k, v in sel.items()):
                continue
            for srv in spec.get("servers") or []:
                n = (srv.get("port") or {}).get("number")
                proto = str((srv.get("port") or {}).get("protocol") or "").upper()
                tls = srv.get("tls") or {}
                if isinstance(n, int) and proto in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "MONGO", "MYSQL",
                                                    "REDIS") and not (proto == "HTTP" and tls.get("mode")):
                    ports.add(self.opts.port_map.get(n, n))
        return sorted(ports)

    def info(self, state: str) -> dict[str, Any]:
        o = self.opts
        return {
            "pid": os.getpid(),
            "state": state,
            "mode": self.mode,
            "modeReason": self.mode_reason,
            "api": f"{self.cp.api_address[0]}:{self.cp.api_address[1]}" if self.cp and self.cp.api_address else None,
            "discovery": self.discovery_address,
            "gateway": {"address": o.gateway_address, "portMap": {str(k): v for k, v in o.port_map.items()},
                        "pod": self.gateway.key if self.gateway else None,
                        "adminPort": self.gateway.admin_port if self.gateway else None},
            "network": {"bridge": o.bridge, "prefix": o.prefix, "podCIDR": o.pod_cidr,
                        "serviceCIDR": o.service_cidr} if self.mode == "netns" else None,
            "workdir": str(o.workdir),
            "started": time.time() - (time.monotonic() - self.t0),
        }

    def write_info(self, state: str) -> None:
        with contextlib.suppress(OSError):
            _write_json(self.opts.state_dir / INFO_FILE, self.info(state))

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        o = self.opts
        st = o.state_dir
        st.mkdir(parents=True, exist_ok=True, mode=0o700)
        pid_path = st / PID_FILE
        with contextlib.suppress(OSError, ValueError):
            old = int(pid_path.read_text().strip())
            if old != os.getpid() and pid_alive(old):
                raise MeshError(f"a mesh is already running from {st} (pid {old}); `pilotfish down` stops it")
        from pilotfish.config import FileBackend, StateError

        try:
            self.store = MeshStore(FileBackend(st), service_cidr=o.service_cidr)
        except StateError as e:
            raise MeshError(str(e)) from None
        try:
            await self._start()
        except BaseException:
            await self.stop(quiet=True)
            raise

    async def _start(self) -> None:
        o = self.opts
        st = o.state_dir
        await self._clean_previous()
        (st / PID_FILE).write_text(f"{os.getpid()}\n")
        self._started = True
        self.write_info("starting")
        token = load_or_create_token(st / "token")
        # -- network or explicit mode
        if o.explicit:
            self.mode, self.mode_reason = "explicit", "--explicit was given"
        else:
            from pilotfish.runtime.network import available

            ok, why = await asyncio.to_thread(available)
            if not ok:
                self.mode, self.mode_reason = "explicit", why
        if self.mode == "netns":
            from pilotfish.runtime.network import PodNetwork

            self.network = PodNetwork(st / "network", o.pod_cidr, o.bridge, o.prefix, o.service_cidr)
            await asyncio.to_thread(self.network.setup)
            self.host_ip = self.network.gateway
            self.say(f"network: pods in network namespaces on bridge {o.bridge} ({o.pod_cidr}, host "
                     f"{self.network.gateway}); ClusterIPs from {o.service_cidr}; interception by iptables (REDIRECT)")
        else:
            self.say("")
            self.say(f"*** EXPLICIT PROXY MODE: {self.mode_reason}. ***")
            if self.explicit_notice:
                self.say(self.explicit_notice)
            self.say("")
        # -- control plane
        disc_host = self.network.gateway if self.network is not None else "127.0.0.1"
        placement = Placement(o.gateway_address, o.port_map)
        self.cp = MeshControlPlane(st, token, store=self.store, debounce=o.debounce, placement=placement,
                                   on_rebuild=self._on_rebuild)
        try:
            await self.cp.start(o.api, (disc_host, o.discovery_port))
        except OSError as e:
            raise MeshError(f"control plane: cannot listen (api {o.api[0]}:{o.api[1]}, discovery "
                            f"{disc_host}:{o.discovery_port}): {e.strerror or e}") from None
        assert self.cp.api_address is not None and self.cp.discovery_address is not None
        self.discovery_address = f"{self.cp.discovery_address[0]}:{self.cp.discovery_address[1]}"
        self.say(f"control plane: api http://{self.cp.api_address[0]}:{self.cp.api_address[1]}, discovery "
                 f"{self.discovery_address}, state {st} ({len(self.store or [])} objects)")
        # -- controller
        from pilotfish.runtime.pod import SidecarSpec

        self.sidecar_spec = SidecarSpec(discovery_address=self.discovery_address, token_file=st / "token",
                                        extra_args=("--discovery-backoff-max", "1"))
        assert self.store is not None
        self.controller = Controller(self.store, self._runner, log_root=st / "logs", node_name=self.node_name,
                                     host_ip=self.host_ip, pids_file=st / PIDS_FILE,
                                     on_event=self._on_pod_event, network=self.network is not None)
        self.controller.registry_changed(self.cp.generation.registry)
        # -- gateway, then the pods
        self.gateway = Gateway(self)
        self.controller.set_extra_pids(self.gateway.pid)
        await self.controller.start()
        await self.gateway.start()
        ports = ", ".join(str(p) for p in self.gateway_ports()) or "none yet: apply a Gateway"
        pm = "".join(f", {a}->{b}" for a, b in sorted(o.port_map.items()))
        self.say(f"ingress gateway: {self.gateway.key} on {o.gateway_address} (ports {ports}{pm})")
        self.write_info("running")

    async def _clean_previous(self) -> None:
        """What a run that died without stopping left: its processes, network, stale Pods."""
        st = self.opts.state_dir
        notes: list[str] = []
        killed = await asyncio.to_thread(kill_recorded, st / PIDS_FILE)
        if killed:
            notes.append(f"{len(killed)} process group(s)")
        if (st / "network" / "network.json").exists() and os.geteuid() == 0:
            from pilotfish.runtime.network import NetworkError, cleanup_stale

            try:
                notes += await asyncio.to_thread(cleanup_stale, st / "network")
            except NetworkError as e:
                raise MeshError(str(e)) from None
        with contextlib.suppress(OSError, ValueError):
            old = int((st / PID_FILE).read_text().strip())
            if old != os.getpid():
                notes.insert(0, f"stale pid file (pid {old})")
        if notes:
            self.say(f"cleaned up after a previous run that did not stop cleanly: {'; '.join(notes)}")

    def _runner(self, *, namespace: str, name: str, pod_spec: dict[str, Any], labels: dict[str, str],
                annotations: dict[str, str], service_account: str, inject: bool, log_dir: Path,
                on_status: Callable[[Any], None], hosts: dict[str, str], services: Any) -> Any:
        from pilotfish.runtime.pod import PodRunner

        return PodRunner(namespace, name, pod_spec, labels, annotations, service_account, self.network,
                         self.sidecar_spec if inject else None, self.opts.workdir, log_dir, on_status,
                         hosts=hosts, services=services, backoff_base=self.opts.backoff_base)

    def _on_rebuild(self, gen: Any) -> None:
        if self.controller is not None and gen.registry is not None:
            self.controller.registry_changed(gen.registry)

    # ------------------------------------------------------------------ progress

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:5.1f}s"

    def _on_pod_event(self, what: str, h: PodHandle) -> None:
        key = f"{h.namespace}/{h.name}"
        if what == "created":
            self._line(key, f"created{' (sidecar injected)' if h.inject else ''}")
        elif what == "stopping":
            self._line(key, "stopping")
        elif what == "deleted":
            self._line(key, "deleted")
            self._last_line.pop(key, None)
        elif what == "status" and h.status is not None:
            self._pod_event_line(key, h.status)

    def _pod_event_line(self, key: str, st: Any) -> None:
        if st.reason in ("Pending", "ContainerCreating", "PodInitializing") and key in self._last_line:
            return  # the short steps between "created" and the containers running
        text = f"{st.ready_count} {st.reason}"
        if st.restarts:
            text += f" (restarts {st.restarts})"
        if st.message and st.reason not in ("Running",):
            text += f": {st.message}"
        self._line(key, text)

    def _line(self, key: str, text: str) -> None:
        if self._last_line.get(key) == text:
            return
        self._last_line[key] = text
        if self.show_events:
            self.say(f"  [{self.elapsed()}] {key}  {text}")

    # ------------------------------------------------------------------ readiness

    def pending(self) -> list[PodHandle | str]:
        """What is not ready yet: pods of Deployments short of ready replicas (and not rolled
        out), and the gateway as a string."""
        out: list[PodHandle | str] = []
        if self.gateway is not None and not self.gateway.ready:
            out.append("gateway")
        if self.store is None or self.controller is None:
            return out
        for so in self.store.list("Deployment"):
            spec = so.data.get("spec") or {}
            if spec.get("paused"):
                continue
            replicas = spec.get("replicas", 1)
            h_new = template_hash(spec.get("template") or {})
            pods = [h for h in self.controller.pods.values()
                    if (h.namespace, h.owner) == (so.namespace, so.name) and not h.stopping]
            ready_new = [h for h in pods if h.template_hash == h_new and h.ready]
            if len(ready_new) < replicas or len(pods) != replicas:
                out += [h for h in pods if not h.ready] or [f"deployment {so.namespace}/{so.name}"]
        return out

    async def wait_ready(self, timeout: float) -> list[str]:
        """Wait until every Deployment's pods and the gateway are ready. Returns a description
        of what is still not ready after ``timeout`` (empty on success)."""
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.1)  # let the controller see what is stored
        while True:
            pending = self.pending()
            if not pending:
                return []
            if time.monotonic() > deadline:
                return self.describe(pending)
            await asyncio.sleep(0.2)

    def describe(self, pending: list[PodHandle | str], lines: int = 12) -> list[str]:
        out: list[str] = []
        for p in pending:
            if isinstance(p, str):
                if p == "gateway" and self.gateway is not None:
                    out.append(f"{self.gateway.key}: not ready")
                    out += _tail(self.gateway.log_path, lines, "    ")
                else:
                    out.append(f"{p}: no pods")
                continue
            st = p.status
            head = f"{p.namespace}/{p.name}: " + (
                f"{st.ready_count} {st.reason}" + (f" (restarts {st.restarts})" if st.restarts else "")
                + (f": {st.message}" if st.message else "") if st is not None else "not started")
            out.append(head)
            for c in (st.containers if st is not None else ()):
                if c.ready:
                    continue
                why = c.state + (f", exit code {c.exit_code}" if c.exit_code is not None else "")
                why += f": {c.message}" if c.message else ""
                out.append(f"  container {c.name} not ready ({why}); last lines of its log:")
                out += _tail(p.log_path(c.name), lines, "    ") or ["    (empty)"]
        return out

    def gateway_nack(self) -> str | None:
        """The gateway's last rejected configuration error (a port in use...), if any."""
        d = self.cp.discovery if self.cp is not None else None
        if d is None or self.gateway is None:
            return None
        for s in d.statuses():
            if s.node.name == self.gateway.name and s.nack:
                return s.nack
        return None

    # ------------------------------------------------------------------ stop

    async def stop(self, quiet: bool = False) -> None:
        """Apps first, then sidecars (each pod does both, all pods at once), then the gateway,
        the control plane and the network."""
        if self.controller is not None:
            if not quiet:
                self.say(f"stopping {len(self.controller.pods)} pods (apps, then sidecars)...")
            self.show_events = False
            await self.controller.stop()
            self.controller = None
        if self.gateway is not None:
            if not quiet:
                self.say("stopping the ingress gateway...")
            await self.gateway.stop()
            self.gateway = None
        if self.cp is not None:
            if not quiet:
                self.say("stopping the control plane...")
            await self.cp.close()
            self.cp = None
        elif self.store is not None:
            self.store.close()
        self.store = None
        if self.network is not None:
            await asyncio.to_thread(self.network.teardown)
            if not quiet:
                self.say(f"network removed (bridge {self.opts.bridge}, pod namespaces, veths, iptables rules)")
            self.network = None
        if self._started:
            st = self.opts.state_dir
            kill_recorded(st / PIDS_FILE)
            for name in (PID_FILE, INFO_FILE):
                with contextlib.suppress(OSError):
                    (st / name).unlink()
            self._started = False


def _tail(path: Path, n: int, indent: str = "") -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return [indent + ln for ln in data.decode("utf-8", "replace").splitlines()[-n:]]


async def run_until_signal(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
