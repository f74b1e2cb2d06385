"""Pod networking on one machine: a bridge, one network namespace per pod, and inside each pod
the iptables rules Istio's init container installs (or kube-proxy-like DNAT for pods without
a sidecar).

Layout (defaults)::

    host                                   pod netns "pf-1a2b3c4d"
    pf0 10.244.0.1/16  <── veth pfv1a2b3c4d ──> eth0 10.244.0.2/16
                                               lo up
                                               10.244.0.0/16 (connected, via the bridge)
                                               10.96.0.0/16 via 10.244.0.1 (services)
                                               no default route

- Pod to pod is plain L2 through the bridge: no IP forwarding, no NAT, no host sysctl change.
- The host reaches every pod address directly (the bridge holds the first address of the
  CIDR); a pod reaches the host at that address (``PodNetwork.gateway``: where the control
  plane listens for sidecars).
- ClusterIPs are routed into the bridge only so that ``connect()`` to one is possible: the
  sidecar's REDIRECT (or the DNAT of :meth:`PodNetwork.service_dnat`) rewrites the
  destination before a packet leaves the pod. Nothing forwards them further.
- If the host forwards IPv4 (``net.ipv4.ip_forward=1``, e.g. Docker is installed), the bridge
  is fenced off in a chain of our own (``PF-FWD-<bridge>``: nothing routed in or out of it) and
  the service CIDR gets a host blackhole route, so pod and service addresses never leave the
  machine. If bridged frames go through iptables (br_netfilter) and FORWARD is not a plain
  ACCEPT, the same chain accepts bridge-to-bridge traffic. Otherwise the host gets no rule.

Everything created is first written to ``<state_dir>/network.json`` (bridge, host rules and
routes, every pod's namespace, veth and address), so :meth:`PodNetwork.teardown` and, after a
crash, :func:`cleanup_stale` remove exactly what was made. A :class:`PodNetwork` holds an
exclusive ``flock`` on ``<state_dir>/network.lock`` from :meth:`~PodNetwork.setup` to
:meth:`~PodNetwork.teardown`; a crashed process releases it with its death, which is how
:func:`cleanup_stale` tells leftovers from a live network.

Methods are synchronous (they run ``ip``/``iptables``); they are thread-safe, so async code
calls them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "available", "cleanup_stale", "netns_socket", "NetworkError", "PodNet", "PodNetwork",
    "PROXY_UID", "OUTBOUND_CAPTURE_PORT", "INBOUND_CAPTURE_PORT", "DEFAULT_EXCLUDE_INBOUND_PORTS",
    "DEFAULT_POD_CIDR", "DEFAULT_SERVICE_CIDR",
]

NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")
STATE_FILE = "network.json"
LOCK_FILE = "network.lock"
HOST_LOCK = Path("/run/pilotfish/host.lock")
FILTER_CREATED_MARKER = Path("/run/pilotfish/created-ip-filter")  # see _teardown_records

DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/16"
PROXY_UID = 1337  # Istio's sidecar uid (and gid): its own traffic is never redirected
OUTBOUND_CAPTURE_PORT = 15001  # virtualOutbound
INBOUND_CAPTURE_PORT = 15006  # virtualInbound
DEFAULT_EXCLUDE_INBOUND_PORTS = (15000, 15020, 15021, 15090)
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"  # Envoy's inbound passthrough source address

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CLONE_NEWNET = 0x40000000

HOSTS_HEADER = """\
# Kubernetes-managed hosts file (written by pilotfish for pod {key}).
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""

# No name server is reachable from a pod: names come from its /etc/hosts. With this file the
# resolver fails at once (nothing listens on the pod's own 127.0.0.1:53) instead of trying the
# host's name servers, which a pod cannot reach.
RESOLV_CONF = """\
# pilotfish pod: names resolve through /etc/hosts only.
nameserver 127.0.0.1
options timeout:1 attempts:1
"""


class NetworkError(RuntimeError):
    """A network operation failed; the message names the command and what it said."""


@dataclass(frozen=True)
class PodNet:
    """One pod's network: its namespace, address and the host end of its veth."""

    key: str
    netns: str
    ip: str
    host_veth: str
    prefixlen: int = 16
    gateway: str = ""  # the bridge's address: the host as the pod sees it


# --------------------------------------------------------------------------- commands


def _run(argv: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise NetworkError(f"{argv[0]}: not found")
    if check and r.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {(r.stderr or r.stdout).strip() or f'exit {r.returncode}'}")
    return r


def _netns_exists(name: str) -> bool:
    return (NETNS_RUN_DIR / name).exists()


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """Serializes changes to the host's own tables between pilotfish processes."""
    HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _nft_backend() -> bool:
    """Whether iptables is iptables-nft (its tables are nftables tables)."""
    if shutil.which("nft") is None:
        return False
    return "nf_tables" in _run(["iptables", "-V"], check=False).stdout


def available() -> tuple[bool, str]:
    """Whether pods can get network namespaces with interception here: ``(True, "")``, or
    ``(False, why)`` (the caller then falls back to explicit proxy mode)."""
    if os.geteuid() != 0:
        return False, "network namespaces and iptables need root"
    for tool, pkg in (("ip", "iproute2"), ("iptables", "iptables"), ("iptables-restore", "iptables"),
                      ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (install {pkg})"
    name = f"pf-probe-{uuid.uuid4().hex[:8]}"
    try:
        _run(["ip", "netns", "add", name])
        _run(["ip", "netns", "exec", name, "iptables", "-t", "nat", "-S"])
    except NetworkError as e:
        return False, f"cannot use a network namespace: {e}"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return True, ""


# --------------------------------------------------------------------------- sockets in a netns


_libc: Any = None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, _CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def netns_socket(netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in network namespace ``netns`` (usable from any thread; e.g. to reach
    a sidecar's admin endpoint on the pod's own 127.0.0.1). Needs CAP_SYS_ADMIN (root).

    The namespace of a thread is its own on Linux: a short-lived thread enters ``netns``,
    creates the socket and ends, so no other thread ever changes namespace."""
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            fd = os.open(NETNS_RUN_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            out["sock"] = socket.socket(family, type)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    t = threading.Thread(target=work, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]


# --------------------------------------------------------------------------- state records


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise NetworkError(f"{path}: unreadable records ({e}); remove what they described by hand")


def _write_state(state_dir: Path, st: dict[str, Any]) -> None:
    path = state_dir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(st, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lock(state_dir: Path) -> int:
    """Take the state directory's lock (held until the fd is closed or the process dies)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        try:
            holder = os.pread(fd, 32, 0).decode().strip() or "?"
        finally:
            os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise NetworkError(f"{state_dir} is in use by a running pod network (pid {holder})")
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _kill_netns_processes(netns: str) -> None:
    """SIGKILL whatever still runs in ``netns`` (what a crashed run left behind)."""
    r = _run(["ip", "netns", "pids", netns], check=False)
    for tok in r.stdout.split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _destroy_pod(rec: dict[str, Any], removed: list[str]) -> None:
    ns, veth = rec["netns"], rec["host_veth"]
    if _netns_exists(ns):
        _kill_netns_processes(ns)
    if _link_exists(veth):
        _run(["ip", "link", "del", veth], check=False)
        removed.append(f"veth {veth}")
    if _netns_exists(ns):
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(f"netns {ns}")
    etc = NETNS_ETC_DIR / ns
    if etc.exists():
        shutil.rmtree(etc, ignore_errors=True)
    try:
        NETNS_ETC_DIR.rmdir()  # only if empty: we may have created it
    except OSError:
        pass


def _teardown_records(st: dict[str, Any]) -> list[str]:
    """Remove everything ``st`` records, in reverse order of creation. Idempotent: what is
    already gone is skipped. Returns what was removed."""
    removed: list[str] = []
    for rec in list(st.get("pods", {}).values()):
        _destroy_pod(rec, removed)
    if st.get("host_rules") or st.get("host_chains"):
        with _host_lock():
            for rule in reversed(st.get("host_rules", [])):
                r = _run(["iptables", "-t", rule["table"], "-D", rule["chain"], *rule["rule"]], check=False)
                if r.returncode == 0:
                    removed.append(f"iptables -t {rule['table']} {rule['chain']} {' '.join(rule['rule'])}")
            for ch in reversed(st.get("host_chains", [])):
                _run(["iptables", "-t", ch["table"], "-F", ch["chain"]], check=False)
                if _run(["iptables", "-t", ch["table"], "-X", ch["chain"]], check=False).returncode == 0:
                    removed.append(f"iptables chain {ch['table']}/{ch['chain']}")
            if FILTER_CREATED_MARKER.exists():
                # a pilotfish network made iptables-nft create the filter table: drop it once
                # nothing is left in it, whichever network that was
                dump = _run(["iptables-save", "-t", "filter"], check=False).stdout.splitlines()
                if not any(ln.startswith("-A ") or (ln.startswith(":") and " ACCEPT " not in ln) for ln in dump):
                    if _run(["nft", "delete", "table", "ip", "filter"], check=False).returncode == 0:
                        removed.append("nft table ip filter")
                    FILTER_CREATED_MARKER.unlink(missing_ok=True)
    for route in reversed(st.get("host_routes", [])):
        if _run(["ip", "route", "del", *route], check=False).returncode == 0:
            removed.append(f"route {' '.join(route)}")
    bridge = st.get("bridge")
    if st.get("bridge_created") and bridge and _link_exists(bridge):
        _run(["ip", "link", "del", bridge], check=False)
        removed.append(f"bridge {bridge}")
    return removed


def cleanup_stale(state_dir: str | Path) -> list[str]:
    """Remove what a crashed pod network recorded in ``state_dir`` (its namespaces, processes
    still running in them, veths, bridge, host rules and routes), then its records. Raises
    :class:`NetworkError` if a live process still owns ``state_dir``. Returns what it removed
    (empty when there was nothing)."""
    state_dir = Path(state_dir)
    if not (state_dir / STATE_FILE).exists():
        return []
    fd = _lock(state_dir)
    try:
        st = _read_state(state_dir)
        removed = _teardown_records(st) if st else []
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        return removed
    finally:
        _unlock(fd)


# --------------------------------------------------------------------------- the network


def _check_name(what: str, name: str, maxlen: int) -> None:
    if not name or len(name) > maxlen or not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r}: 1 to {maxlen} characters of [A-Za-z0-9_.-]")


def _port(p: Any, what: str) -> int:
    if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
        raise ValueError(f"{what}: {p!r} is not a port number")
    return p


class PodNetwork:
    """The bridge and the pods' namespaces of one local mesh (see the module docstring).

    ``prefix`` names what is created: namespaces ``<prefix>-<hash>``, host veths
    ``<prefix>v<hash>`` (so at most 6 characters); ``bridge`` at most 15. ``fence``: whether to
    fence the bridge off from IP forwarding (a host chain and a service-CIDR blackhole route);
    None (the default) does it only when the host forwards IPv4."""

    def __init__(self, state_dir: str | Path, pod_cidr: str = DEFAULT_POD_CIDR, bridge: str = "pf0",
                 prefix: str = "pf", service_cidr: str = DEFAULT_SERVICE_CIDR, *,
                 fence: bool | None = None) -> None:
        _check_name("bridge", bridge, 15)
        _check_name("prefix", prefix, 6)
        net = ipaddress.ip_network(pod_cidr, strict=False)
        svc = ipaddress.ip_network(service_cidr, strict=False)
        if not isinstance(net, ipaddress.IPv4Network) or not isinstance(svc, ipaddress.IPv4Network):
            raise ValueError("pod and service CIDRs: only IPv4 is supported")
        if net.prefixlen > 29:
            raise ValueError(f"pod CIDR {pod_cidr}: too small (at most /29)")
        if net.overlaps(svc):
            raise ValueError(f"pod CIDR {net} overlaps service CIDR {svc}")
        self.state_dir = Path(state_dir)
        self.pod_cidr = net
        self.service_cidr = svc
        self.bridge = bridge
        self.prefix = prefix
        self.gateway = str(net.network_address + 1)
        self.fence = fence
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._st: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        """Create the bridge (and host rules only where needed, see the module docstring).
        Leftovers of a crashed run recorded in ``state_dir`` are removed first."""
        with self._lock:
            if self._st is not None:
                return
            fd = _lock(self.state_dir)
            try:
                old = _read_state(self.state_dir)
                if old:
                    _teardown_records(old)
                    (self.state_dir / STATE_FILE).unlink(missing_ok=True)
                self._check_host()
                st: dict[str, Any] = {
                    "version": 1, "pid": os.getpid(), "bridge": self.bridge, "bridge_created": False,
                    "pod_cidr": str(self.pod_cidr), "service_cidr": str(self.service_cidr),
                    "prefix": self.prefix, "gateway": self.gateway,
                    "host_rules": [], "host_chains": [], "host_routes": [], "pods": {}, "next_ip": 2,
                }
                self._st = st
                self._lock_fd = fd
                st["bridge_created"] = True
                self._save()
                br = self.bridge
                _run(["ip", "-batch", "-"], input="\n".join([
                    f"link add name {br} type bridge",
                    f"link set dev {br} addrgenmode none",
                    f"addr add {self.gateway}/{self.pod_cidr.prefixlen} dev {br}",
                    f"link set dev {br} up",
                ]) + "\n")
                self._host_guards()
            except BaseException:
                if self._st is not None:
                    _teardown_records(self._st)
                    (self.state_dir / STATE_FILE).unlink(missing_ok=True)
                self._st = None
                self._lock_fd = None
                _unlock(fd)
                raise

    def teardown(self) -> list[str]:
        """Remove every pod namespace, veth, the bridge and every host rule and route this
        network created (from its records), then the records. Returns what was removed."""
        with self._lock:
            if self._st is None:
                return []
            removed = _teardown_records(self._st)
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)
            self._st = None
            _unlock(self._lock_fd)
            self._lock_fd = None
            return removed

    cleanup_stale = staticmethod(cleanup_stale)

    def _save(self) -> None:
        assert self._st is not None
        _write_state(self.state_dir, self._st)

    def _state(self) -> dict[str, Any]:
        if self._st is None:
            raise NetworkError("the pod network is not set up (call setup() first)")
        return self._st

    def _check_host(self) -> None:
        if _link_exists(self.bridge):
            raise NetworkError(f"interface {self.bridge} already exists (another pilotfish network? "
                               f"`pilotfish down`, or choose another bridge name)")
        r = _run(["ip", "-j", "-4", "route", "show", "table", "all"])
        for route in json.loads(r.stdout or "[]"):
            dst = route.get("dst")
            if not dst or dst == "default" or route.get("type") in ("local", "broadcast"):
                continue
            try:
                net = ipaddress.ip_network(dst, strict=False)
            except ValueError:
                continue
            for mine, what in ((self.pod_cidr, "pod"), (self.service_cidr, "service")):
                if net.overlaps(mine):
                    raise NetworkError(f"{what} CIDR {mine} overlaps route {dst} dev {route.get('dev', '?')} "
                                       f"already on this host; choose another CIDR")

    def _host_guards(self) -> None:
        """Host rules and routes, only when needed (see the module docstring); recorded."""
        st = self._state()
        forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
        if self.fence is not None:
            forwarding = self.fence
        brnf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        bridged_filtered = brnf.exists() and brnf.read_text().strip() == "1"
        accept_needed = False
        if bridged_filtered:
            lines = _run(["iptables", "-t", "filter", "-S", "FORWARD"]).stdout.splitlines()
            accept_needed = any(not ln.startswith("-P ") for ln in lines) or "-P FORWARD ACCEPT" not in lines
        if forwarding or accept_needed:
            chain = f"PF-FWD-{self.bridge}"
            with _host_lock():
                if _nft_backend() and _run(["nft", "list", "table", "ip", "filter"], check=False).returncode != 0:
                    # iptables-nft creates the table for our rules: remove it when it ends empty
                    FILTER_CREATED_MARKER.parent.mkdir(parents=True, exist_ok=True)
                    FILTER_CREATED_MARKER.touch()
                st["host_chains"].append({"table": "filter", "chain": chain})
                self._save()
                _run(["iptables", "-t", "filter", "-N", chain])
                _run(["iptables", "-t", "filter", "-A", chain, "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"])
                if forwarding:
                    _run(["iptables", "-t", "filter", "-A", chain, "-j", "DROP"])
                for rule in (["-o", self.bridge, "-j", chain], ["-i", self.bridge, "-j", chain]):
                    st["host_rules"].append({"table": "filter", "chain": "FORWARD", "rule": rule})
                    self._save()
                    _run(["iptables", "-t", "filter", "-I", "FORWARD", "1", *rule])
        if forwarding:
            route = ["blackhole", str(self.service_cidr)]
            st["host_routes"].append(route)
            self._save()
            _run(["ip", "route", "add", *route])

    # ------------------------------------------------------------------ pods

    def _names(self, key: str) -> tuple[str, str]:
        h = hashlib.sha1(key.encode()).hexdigest()[:8]
        return f"{self.prefix}-{h}", f"{self.prefix}v{h}"

    def _allocate(self, st: dict[str, Any]) -> str:
        used = {p["ip"] for p in st["pods"].values()}
        base = int(self.pod_cidr.network_address)
        first, size = 2, self.pod_cidr.num_addresses - 3  # not the network, gateway, broadcast
        start = int(st.get("next_ip", first)) - first
        for i in range(size):
            off = first + (start + i) % size
            ip = str(ipaddress.IPv4Address(base + off))
            if ip not in used:
                # round robin: a freed address is not handed out again at once
                st["next_ip"] = first + (off - first + 1) % size
                return ip
        raise NetworkError(f"pod CIDR {self.pod_cidr} is full")

    def pod(self, key: str) -> PodNet:
        """The network of pod ``key`` (KeyError if it has none)."""
        with self._lock:
            rec = self._state()["pods"][key]
            return PodNet(key=key, netns=rec["netns"], ip=rec["ip"], host_veth=rec["host_veth"],
                          prefixlen=self.pod_cidr.prefixlen, gateway=self.gateway)

    def pods(self) -> list[PodNet]:
        with self._lock:
            return [self.pod(k) for k in sorted(self._state()["pods"])]

    def add_pod(self, key: str) -> PodNet:
        """A new namespace for pod ``key`` with eth0 on the bridge and the next free address."""
        with self._lock:
            st = self._state()
            if key in st["pods"]:
                raise NetworkError(f"pod {key} already has a network ({st['pods'][key]['netns']})")
            netns, veth = self._names(key)
            if _netns_exists(netns) or _link_exists(veth):
                raise NetworkError(f"network namespace {netns} or interface {veth} exists but is not "
                                   f"recorded in {self.state_dir}; remove it by hand")
            ip = self._allocate(st)
            rec = {"netns": netns, "ip": ip, "host_veth": veth, "intercept": None, "services": []}
            st["pods"][key] = rec
            self._save()  # recorded before it exists: a crash from here on is cleaned up
            try:
                _run(["ip", "netns", "add", netns])
                _run(["ip", "-batch", "-"], input="\n".join([
                    f"link add name {veth} type veth peer name eth0 netns {netns}",
                    f"link set dev {veth} addrgenmode none",
                    f"link set dev {veth} master {self.bridge}",
                    f"link set dev {veth} up",
                ]) + "\n")
                _run(["ip", "-n", netns, "-batch", "-"], input="\n".join([
                    "link set dev lo up",
                    "link set dev eth0 addrgenmode none",
                    f"addr add {ip}/{self.pod_cidr.prefixlen} dev eth0",
                    "link set dev eth0 up",
                    f"route add {self.service_cidr} via {self.gateway} dev eth0",
                ]) + "\n")
                etc = NETNS_ETC_DIR / netns
                etc.mkdir(parents=True, exist_ok=True)
                (etc / "resolv.conf").write_text(RESOLV_CONF)
                (etc / "hosts").write_text(HOSTS_HEADER.format(key=key))
            except BaseException:
                _destroy_pod(rec, [])
                del st["pods"][key]
                self._save()
                raise
            return self.pod(key)

    def remove_pod(self, key: str) -> None:
        """Remove pod ``key``'s namespace (killing anything still running in it), veth and
        /etc/netns files, and free its address. Unknown keys are ignored."""
        with self._lock:
            st = self._state()
            rec = st["pods"].get(key)
            if rec is None:
                return
            _destroy_pod(rec, [])
            del st["pods"][key]
            self._save()

    def write_hosts(self, key: str, entries: dict[str, str]) -> None:
        """The pod's /etc/hosts (``/etc/netns/<netns>/hosts``, which ``ip netns exec`` mounts
        over /etc/hosts): the localhost lines, then one line per address.

        ``entries`` maps a name to its address (``{"reviews.default.svc.cluster.local":
        "10.96.0.12", "reviews": "10.96.0.12", ...}``); a key that is itself an address is read
        as address -> space-separated names. Names of one address share a line, in the order
        given. The file is rewritten in place, so running processes see the new content."""
        lines: dict[str, list[str]] = {}
        for k, v in entries.items():
            try:
                ipaddress.ip_address(k)
                ip, names = k, v.split()
            except ValueError:
                ip, names = v, [k]
            ipaddress.ip_address(ip)  # ValueError on garbage
            for n in names:
                if not n or any(c.isspace() for c in n):
                    raise ValueError(f"hosts entry {n!r}: not a host name")
            lst = lines.setdefault(ip, [])
            lst.extend(n for n in names if n not in lst)
        text = HOSTS_HEADER.format(key=key) + "".join(f"{ip}\t{' '.join(ns)}\n" for ip, ns in lines.items())
        with self._lock:
            path = NETNS_ETC_DIR / self.pod(key).netns / "hosts"
            with open(path, "w") as f:  # same inode: the bind mounts of running processes see it
                f.write(text)

    # ------------------------------------------------------------------ iptables in the pod

    def intercept(self, key: str, proxy_uid: int = PROXY_UID, inbound_ports: list[int] | None = None,
                  exclude_inbound_ports: tuple[int, ...] | list[int] = DEFAULT_EXCLUDE_INBOUND_PORTS,
                  exclude_outbound_ports: tuple[int, ...] | list[int] = (),
                  exclude_outbound_cidrs: tuple[str, ...] | list[str] = ()) -> None:
        """Istio's init-container rules in the pod's nat table: inbound TCP to 15006 (all ports,
        or only ``inbound_ports``; never the excluded ones), outbound TCP to 15001 except the
        traffic of ``proxy_uid`` (uid or gid), loopback-to-loopback traffic and the excluded
        ports and CIDRs. Calling it again replaces the rules."""
        spec = {
            "proxy_uid": int(proxy_uid),
            "inbound_ports": None if inbound_ports is None else [_port(p, "inbound port") for p in inbound_ports],
            "exclude_inbound_ports": [_port(p, "excluded inbound port") for p in exclude_inbound_ports],
            "exclude_outbound_ports": [_port(p, "excluded outbound port") for p in exclude_outbound_ports],
            "exclude_outbound_cidrs": [str(ipaddress.ip_network(c, strict=False)) for c in exclude_outbound_cidrs],
        }
        with self._lock:
            rec = self._state()["pods"][key]
            rec["intercept"] = spec
            self._save()
            self._apply_rules(key)

    def service_dnat(self, key: str, services: list[tuple[str, int, list[tuple[str, int]]]]) -> None:
        """kube-proxy's job for a pod (meant for pods without a sidecar): connections from the
        pod to ``cluster_ip:port`` are DNATed to one of the endpoints, picked at random
        (``statistic --mode random`` chains); a service without endpoints is rejected at once
        (TCP reset). ``services``: ``[(cluster_ip, port, [(endpoint_ip, endpoint_port),
        ...]), ...]``. Calling it again replaces every rule (an empty list removes them)."""
        by_vip: dict[tuple[str, int], list[list[Any]]] = {}  # a repeated (ip, port): the last wins
        for vip, port, eps in services:
            k = (str(ipaddress.IPv4Address(vip)), _port(port, f"service {vip} port"))
            uniq: list[list[Any]] = []
            for ip, p in eps:
                ep = [str(ipaddress.IPv4Address(ip)), _port(p, f"endpoint {ip} port")]
                if ep not in uniq:
                    uniq.append(ep)
            by_vip[k] = uniq
        norm = [[vip, port, eps] for (vip, port), eps in by_vip.items()]
        with self._lock:
            rec = self._state()["pods"][key]
            rec["services"] = norm
            self._save()
            self._apply_rules(key)

    def _apply_rules(self, key: str) -> None:
        rec = self._state()["pods"][key]
        text = render_rules(rec.get("intercept"), rec.get("services") or [])
        _run(["ip", "netns", "exec", rec["netns"], "iptables-restore"], input=text)

    # ------------------------------------------------------------------ running things in a pod

    def exec_argv(self, key: str, argv: list[str], uid: int | None = None, gid: int | None = None) -> list[str]:
        """The argv that runs ``argv`` in the pod's namespace (with the pod's /etc/hosts), as
        ``uid`` (and ``gid``, default the same) when given."""
        out = ["ip", "netns", "exec", self.pod(key).netns]
        if uid is not None:
            g = uid if gid is None else gid
            out += ["setpriv", f"--reuid={uid}", f"--regid={g}", "--clear-groups", "--"]
        return out + list(argv)

    def socket(self, key: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket inside the pod's namespace (see :func:`netns_socket`)."""
        return netns_socket(self.pod(key).netns, family, type)

    async def open_connection(self, key: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """``asyncio.open_connection`` from inside the pod, e.g. to its sidecar's admin on the
        pod's 127.0.0.1:15000 (connections from root to 127.0.0.1 are not redirected)."""
        sock = self.socket(key)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)


def _chain_id(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16].upper()


def render_rules(intercept: dict[str, Any] | None, services: list[list[Any]]) -> str:
    """The pod's whole nat and filter tables as ``iptables-restore`` input (restoring it
    replaces both tables atomically). ``intercept`` and ``services`` are the normalized forms
    :meth:`PodNetwork.intercept` and :meth:`PodNetwork.service_dnat` record."""
    nat: list[str] = ["*nat"]
    rules: list[str] = []
    filt: list[str] = ["*filter"]
    frules: list[str] = []
    if intercept is not None:
        uid = str(intercept["proxy_uid"])
        nat += [":ISTIO_INBOUND - [0:0]", ":ISTIO_REDIRECT - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]",
                ":ISTIO_OUTPUT - [0:0]"]
        rules += [f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_CAPTURE_PORT}",
                  f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_CAPTURE_PORT}"]
        inbound = intercept["inbound_ports"]
        excluded = intercept["exclude_inbound_ports"]
        if inbound is None or inbound:
            rules.append("-A PREROUTING -p tcp -j ISTIO_INBOUND")
        if inbound is None:
            rules += [f"-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN" for p in excluded]
            rules.append("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
        else:
            rules += [f"-A ISTIO_INBOUND -p tcp --dport {p} -j ISTIO_IN_REDIRECT"
                      for p in inbound if p not in excluded]
        rules.append("-A OUTPUT -p tcp -j ISTIO_OUTPUT")
        rules += [f"-A ISTIO_OUTPUT -p tcp --dport {p} -j RETURN" for p in intercept["exclude_outbound_ports"]]
        rules += [
            f"-A ISTIO_OUTPUT -s {INBOUND_PASSTHROUGH_SOURCE}/32 -o lo -j RETURN",
            # Istio also sends the proxy's own calls to its pod's address (-o lo, not
            # 127.0.0.1) to the inbound side; our proxy's inbound passthrough does not bind
            # 127.0.0.6, so such a rule would loop: the proxy's traffic simply goes out.
            f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
            f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN",
            f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {uid} -j RETURN",
            f"-A ISTIO_OUTPUT -m owner --gid-owner {uid} -j RETURN",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        ]
        rules += [f"-A ISTIO_OUTPUT -d {c} -j RETURN" for c in intercept["exclude_outbound_cidrs"]]
        rules.append("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    if services:
        nat.append(":PF-SERVICES - [0:0]")
        rules.append("-A OUTPUT -p tcp -j PF-SERVICES")
        for vip, port, eps in services:
            match = f"-d {vip}/32 -p tcp --dport {port}"
            if not eps:
                if len(filt) == 1:
                    filt.append(":PF-SERVICES - [0:0]")
                    frules.append("-A OUTPUT -p tcp -j PF-SERVICES")
                frules.append(f"-A PF-SERVICES {match} -j REJECT --reject-with tcp-reset")
                continue
            svc_chain = f"PF-SVC-{_chain_id(vip, port)}"
            nat.append(f":{svc_chain} - [0:0]")
            rules.append(f"-A PF-SERVICES {match} -j {svc_chain}")
            n = len(eps)
            for i, (ip, p) in enumerate(eps):
                sep_chain = f"PF-SEP-{_chain_id(vip, port, ip, p)}"
                nat.append(f":{sep_chain} - [0:0]")
                prob = "" if i == n - 1 else f" -m statistic --mode random --probability {1 / (n - i):.11f}"
                rules.append(f"-A {svc_chain}{prob} -j {sep_chain}")
                rules.append(f"-A {sep_chain} -p tcp -j DNAT --to-destination {ip}:{p}")
    return "\n".join([*nat, *rules, "COMMIT", *filt, *frules, "COMMIT", ""])
