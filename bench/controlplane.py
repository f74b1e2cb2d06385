#!/usr/bin/env python3
"""Control-plane benchmark: a mesh of 1000 services and 2000 sidecars (issue 4's scale).

    .venv/bin/python bench/controlplane.py            # full run, about 2 minutes
    .venv/bin/python bench/controlplane.py --quick    # smoke test (100 services, 200 proxies)

The mesh: N services (3 ports each: http 8080, grpc 9090, tcp-db 5432) spread over 10
namespaces, each with a DestinationRule (subsets v1 and v2) and a VirtualService (a header
match to v2, then 90/10 to v1/v2), and two Pods (v1 and v2). One sidecar per Pod: 2N proxies.
The *scoped* mesh adds one Sidecar per namespace whose egress hosts are ``./*``,
``istio-system/*`` and three shared services of other namespaces (svc0, svc1, svc2).

What it measures (bench/README.md says how to read it):

1. **Full push** (in a child process of its own, so its memory is its own): from a store
   holding the mesh, build the view and registry (timed alone), then translate every proxy
   (``full_push_s``); then, from a fresh view and registry again, translate every proxy *and*
   prepare and encode its snapshot message exactly as the discovery server does
   (``SnapshotEncoder.prepare`` + ``PreparedSnapshot.message``), keeping what the server keeps
   per proxy (the config with its version, its hash). Then the process's VmRSS. The encoding
   the server did before (one ``msgspec.json.encode`` and a BLAKE2b of the whole snapshot per
   proxy) is measured on a sample of proxies in the same run, and the new bytes are checked to
   be identical to the old ones. Done for the unscoped and the scoped mesh.
2. **Apply to all-ACK**: a real ``pilotfish controlplane`` process, loaded with the scoped mesh
   through its HTTP API; 100 real discovery connections (client processes, using the proxy's
   own ``SnapshotAssembler`` on delta messages and ACKing each version); then ~20 times:
   change one VirtualService (svc0's weights, which every proxy sees) through
   ``POST /api/v1/apply`` and time until every connection has ACKed a snapshot carrying the
   new weight. Once more with clients that ACK without decoding (what the control plane alone
   costs), and once more with clients that take every version whole, for a before/after in
   the same run.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_PY = REPO / ".venv" / "bin" / "python"

try:
    import msgspec

    sys.path.insert(0, str(REPO))
    from pilotfish.proxy import model
except ImportError:  # not the project's interpreter: run again with it
    if VENV_PY.exists() and Path(sys.executable).resolve() != VENV_PY.resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])
    raise

CLK_TCK = os.sysconf("SC_CLK_TCK")
SHARED = 3  # services svc0..svc2 are in every namespace's Sidecar egress
CHANGED_HOST = "svc0.ns0.svc.cluster.local"  # the VirtualService every apply changes


class BenchError(Exception):
    """A measurement could not be made; the message says why. No number is reported for it."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the mesh


def _ip(prefix: int, n: int) -> str:
    return f"10.{prefix + n // 65536}.{(n // 256) % 256}.{n % 256}"


def virtual_service(i: int, n_namespaces: int, weight: int = 90) -> dict:
    name, ns = f"svc{i}", f"ns{i % n_namespaces}"
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [name], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": name, "subset": "v2"}}]},
            {"route": [{"destination": {"host": name, "subset": "v1"}, "weight": weight},
                       {"destination": {"host": name, "subset": "v2"}, "weight": 100 - weight}],
             "timeout": "5s"},
        ]},
    }


def sidecar(ns: str, n_namespaces: int) -> dict:
    hosts = ["./*", "istio-system/*"]
    hosts += [f"ns{i % n_namespaces}/svc{i}.ns{i % n_namespaces}.svc.cluster.local" for i in range(SHARED)]
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": ns},
            "spec": {"egress": [{"hosts": hosts}]}}


def mesh_docs(n_services: int, n_namespaces: int, scoped: bool) -> list[dict]:
    docs: list[dict] = []
    for i in range(n_services):
        ns, name = f"ns{i % n_namespaces}", f"svc{i}"
        docs.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "clusterIP": _ip(96, i), "ports": [
                {"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}, {"name": "tcp-db", "port": 5432}]},
        })
        for v in (1, 2):
            docs.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-v{v}", "namespace": ns, "labels": {"app": name, "version": f"v{v}"}},
                "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080, "name": "http"}]}]},
                "status": {"phase": "Running", "podIP": _ip(0, 2 * i + v),
                           "conditions": [{"type": "Ready", "status": "True"}]},
            })
        docs.append({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": name,
                     "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 100}},
                                       "outlierDetection": {"consecutive5xxErrors": 7}},
                     "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                 {"name": "v2", "labels": {"version": "v2"},
                                  "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]},
        })
        docs.append(virtual_service(i, n_namespaces))
    if scoped:
        docs += [sidecar(f"ns{k}", n_namespaces) for k in range(n_namespaces)]
    return docs


def proxy_nodes(n_services: int, n_namespaces: int, n: int) -> list[model.Node]:
    """One sidecar per pod, in an order that goes round the namespaces (svc0-v1, svc1-v1, ...,
    then the v2 pods), so that any prefix is spread over the namespaces and services."""
    out = []
    for k in range(min(n, 2 * n_services)):
        i, v = k % n_services, 1 + k // n_services
        ns, ip = f"ns{i % n_namespaces}", _ip(0, 2 * i + v)
        out.append(model.Node(
            id=f"sidecar~{ip}~svc{i}-v{v}.{ns}~{ns}.svc.cluster.local", role="sidecar", name=f"svc{i}-v{v}",
            namespace=ns, labels={"app": f"svc{i}", "version": f"v{v}"}, ips=[ip],
            service_account=f"svc{i}", workload_ports=[8080],
        ))
    return out


# --------------------------------------------------------------------------- /proc


def proc_status_mb(field: str, pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_seconds() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2]) / CLK_TCK


OTHERS_MAX = 0.1  # CPU others may use before a measurement counts as disturbed


class Quiet:
    """On a shared machine, wait (a bounded time) for other processes to go quiet before a
    measurement. Each measurement still reports the CPU others used during it."""

    def __init__(self, budget_s: float) -> None:
        self.budget = budget_s

    def wait(self, pids: tuple[int, ...] = ()) -> None:
        t0 = time.monotonic()
        said = False
        while self.budget > 0 and time.monotonic() - t0 < 30:
            m0, o0 = machine_cpu_seconds(), sum(map(cpu_seconds, (os.getpid(), *pids)))
            time.sleep(1.0)
            others = (machine_cpu_seconds() - m0) - (sum(map(cpu_seconds, (os.getpid(), *pids))) - o0)
            self.budget -= 1.0
            if others <= OTHERS_MAX:
                return
            if not said:
                log(f"  waiting for the machine to be quiet (others use {others:.2f} CPU) ...")
                said = True


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def r4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# --------------------------------------------------------------------------- 1. full push


def legacy_message(cfg: model.ProxyConfig, version: str) -> tuple[bytes, str]:
    """What DiscoveryServer did per proxy before the shared encoder: encode the whole config,
    hash the whole encoding, splice it into the framed message."""
    blank = copy.copy(cfg)
    blank.version = ""
    body = msgspec.json.encode(blank)
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    payload = (b'{"type":"snapshot","version":' + msgspec.json.encode(version) + b',"hash":"'
               + digest.encode() + b'","config":' + body + b"}")
    return len(payload).to_bytes(4, "big") + payload, digest


class GcClock:
    """Time spent in the cyclic garbage collector (gc.callbacks), and full collections."""

    def __init__(self) -> None:
        import gc

        self.seconds, self.full, self._t = 0.0, 0, 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t
            self.full += info["generation"] == 2

    def reset(self) -> None:
        self.seconds, self.full = 0.0, 0


def phase_push(args: argparse.Namespace) -> dict:
    """Runs in a child process: see the module docstring, 1."""
    import gc

    from pilotfish.config import MemoryBackend, Store
    from pilotfish.controlplane.discovery import SnapshotEncoder
    from pilotfish.controlplane.translate import translate
    from pilotfish.controlplane.view import ConfigView
    from pilotfish.registry import Registry

    res: dict = {"scoped": args.scoped}
    docs = mesh_docs(args.services, args.namespaces, args.scoped)
    t = time.perf_counter()
    store = Store(MemoryBackend())
    store.apply(docs)
    res["store_apply_s"] = time.perf_counter() - t
    res["objects"] = len(store)
    del docs
    nodes = proxy_nodes(args.services, args.namespaces, args.proxies)
    res["proxies"] = len(nodes)
    res["rss_before_mb"] = proc_status_mb("VmRSS")
    gc_clock = GcClock()

    # -- translate only, from a fresh view and registry
    t = time.perf_counter()
    view = ConfigView.build(store.list())
    registry = Registry.build(view)
    res["view_registry_s"] = time.perf_counter() - t
    t = time.perf_counter()
    first = translate(view, registry, nodes[0])
    res["first_proxy_s"] = time.perf_counter() - t
    res["clusters_per_proxy"] = len(first.clusters)
    res["virtual_hosts_per_proxy"] = sum(len(r.virtual_hosts) for r in first.routes)
    del first
    gc_clock.reset()
    t = time.perf_counter()
    for n in nodes[1:]:
        translate(view, registry, n)
    res["full_push_s"] = time.perf_counter() - t + res["first_proxy_s"]
    res["full_push_gc_s"] = gc_clock.seconds
    del view, registry

    # -- translate + encode, from a fresh view and registry, keeping what the server keeps
    t = time.perf_counter()
    view = ConfigView.build(store.list())
    registry = Registry.build(view)
    res["view_registry_again_s"] = time.perf_counter() - t
    enc = SnapshotEncoder()
    version = "2026-01-01T00:00:00.000Z/1"
    kept: dict[str, tuple[model.ProxyConfig, str]] = {}  # like each _Record: cfg (with version) and hash
    sizes: list[int] = []
    t_tr = t_prep = t_msg = 0.0
    gc_clock.reset()
    for n in nodes:
        a = time.perf_counter()
        cfg = translate(view, registry, n)
        b = time.perf_counter()
        prepared = enc.prepare(cfg)
        c = time.perf_counter()
        msg = prepared.message(version)
        d = time.perf_counter()
        t_tr, t_prep, t_msg = t_tr + b - a, t_prep + c - b, t_msg + d - c
        sizes.append(len(msg))
        stored = copy.copy(cfg)
        stored.version = version
        kept[n.id] = (stored, prepared.hash)
        del msg, prepared, cfg
    res["full_push_encoded_s"] = t_tr + t_prep + t_msg
    res["full_push_encoded_translate_s"] = t_tr
    res["full_push_encoded_hash_s"] = t_prep
    res["full_push_encoded_message_s"] = t_msg
    res["full_push_encoded_gc_s"] = gc_clock.seconds
    res["full_push_encoded_gc_full"] = gc_clock.full
    res["snapshot_kb_mean"] = sum(sizes) / len(sizes) / 1024
    res["snapshot_kb_max"] = max(sizes) / 1024
    res["encoder_cache_mb"] = enc.cached_bytes / 2**20
    res["encoded_elements"] = enc.encoded
    res["rss_mb"] = proc_status_mb("VmRSS")
    res["rss_peak_mb"] = proc_status_mb("VmHWM")

    # -- the old encoding, on a sample of the same proxies (their translation is cached now)
    step = max(1, len(nodes) // args.legacy_sample) if args.legacy_sample < len(nodes) else 1
    if step > 1 and step % args.namespaces == 0:
        step -= 1  # spread the sample over the namespaces
    sample = nodes[::step][: args.legacy_sample]
    cfgs = [translate(view, registry, n) for n in sample]
    # Like for like: the same proxies, the cyclic GC off for both (a full collection landing in
    # one loop and not the other would decide the ratio; the push's GC is reported above).
    gc.collect()
    gc.disable()
    t = time.perf_counter()
    for c in cfgs:
        legacy_message(c, version)
    res["legacy_ms_per_proxy"] = (time.perf_counter() - t) / len(cfgs) * 1000
    res["legacy_sample"] = len(cfgs)
    enc2 = SnapshotEncoder()  # warm, as for every proxy but the first of its template in a push
    for c in cfgs:
        enc2.prepare(c)
    t = time.perf_counter()
    for c in cfgs:
        enc2.prepare(c).message(version)
    res["new_ms_per_proxy"] = (time.perf_counter() - t) / len(cfgs) * 1000
    gc.enable()
    identical = True
    for c in cfgs:  # the bytes on the wire are the old ones (but for the hash's definition)
        old_msg, old_hash = legacy_message(c, version)
        prepared = enc2.prepare(c)
        if bytes(prepared.message(version)) != old_msg.replace(old_hash.encode(), prepared.hash.encode(), 1):
            identical = False
    res["wire_identical"] = identical
    if args.legacy_all:
        t = time.perf_counter()
        for n in nodes:
            legacy_message(translate(view, registry, n), version)
        res["legacy_all_encode_s"] = time.perf_counter() - t
    res["rss_end_mb"] = proc_status_mb("VmRSS")
    assert len(kept) == len(nodes)
    return res


def run_push_child(args: argparse.Namespace, scoped: bool, quiet: Quiet) -> dict:
    argv = [sys.executable, __file__, "--phase", "push", "--services", str(args.services), "--namespaces",
            str(args.namespaces), "--proxies", str(args.proxies), "--legacy-sample", str(args.legacy_sample)]
    if scoped:
        argv.append("--scoped")
    if args.legacy_all:
        argv.append("--legacy-all")
    quiet.wait()
    m0 = machine_cpu_seconds()
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise BenchError(f"the push phase ({'scoped' if scoped else 'unscoped'}) failed: {p.stderr.strip()[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    # CPU used by the machine beyond the one busy child: others (a test run...) disturbing us
    res["others_cpu"] = max(0.0, (machine_cpu_seconds() - m0) / wall - 1.0)
    return res


# --------------------------------------------------------------------------- 2. clients


def _weight_of(cfg: model.ProxyConfig) -> int | None:
    """The v1 weight of the changed VirtualService, as the proxy received it."""
    for rc in cfg.routes:
        if rc.name != "8080":
            continue
        for vh in rc.virtual_hosts:
            if vh.name == CHANGED_HOST + ":8080":
                for r in vh.routes:
                    if r.route is not None and len(r.route.clusters) == 2:
                        return r.route.clusters[0].weight
    return None


_RAW_WEIGHT = re.compile(rb'"name":"' + re.escape(CHANGED_HOST.encode()) + rb':8080".*?"weight":(\d+)', re.S)


async def _client(node: model.Node, host: str, port: int, token: str, mode: str, out) -> None:
    import asyncio

    from pilotfish.gcpolicy import LongLivedGC
    from pilotfish.proxy.discovery_client import (
        MAX_SERVER_MESSAGE,
        PROTOCOL_VERSION,
        Resync,
        ServerMessage,
        SnapshotAssembler,
        encode,
        read_frame,
    )

    decode, delta = mode != "raw", mode != "whole"
    assembler = SnapshotAssembler()  # the proxy's own decoding (discovery_client._apply)
    gc_policy = LongLivedGC()  # as a proxy after applying a snapshot (Proxy.apply)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(encode({"type": "hello", "protocol": PROTOCOL_VERSION, "token": token,
                         "node": msgspec.to_builtins(node), "version": "", "hash": None, "delta": delta}))
    while True:
        data = await read_frame(reader, MAX_SERVER_MESSAGE)
        t_recv = time.monotonic()
        if data is None:
            out({"id": node.id, "closed": True})
            return
        msg = msgspec.json.decode(data, type=ServerMessage)
        if msg.type == "error":
            out({"id": node.id, "error": msg.error})
            return
        if msg.type not in ("snapshot", "delta"):
            continue
        if decode:
            try:
                cfg = assembler.assemble(msg)
            except Resync as e:
                out({"id": node.id, "resync": str(e)})
                writer.write(encode({"type": "nack", "version": msg.version, "error": str(e), "resync": True}))
                continue
            weight = _weight_of(cfg)
            if delta:
                gc_policy.settled()  # the proxy holds what it assembled, as this client does
            del cfg
        else:
            m = _RAW_WEIGHT.search(bytes(msg.new or msg.config))
            weight = int(m.group(1)) if m else None
        t_dec = time.monotonic()
        writer.write(encode({"type": "ack", "version": msg.version}))
        out({"id": node.id, "v": msg.version, "w": weight, "recv": t_recv, "dec": t_dec - t_recv,
             "ack": time.monotonic(), "kb": len(data) / 1024, "delta": msg.type == "delta"})


def phase_clients(args: argparse.Namespace) -> int:
    """Runs in a child process: ``--connections`` discovery clients, one line of JSON on stdout
    per snapshot ACKed."""
    import asyncio

    with contextlib.suppress(OSError):
        os.nice(args.client_nice)
    nodes = [msgspec.convert(n, model.Node) for n in json.loads(Path(args.nodes).read_text())]
    token = Path(args.token_file).read_text().strip()
    host, _, port = args.discovery.rpartition(":")

    def out(d: dict) -> None:
        sys.stdout.write(json.dumps(d) + "\n")
        sys.stdout.flush()

    async def main() -> None:
        await asyncio.gather(*(_client(n, host, int(port), token, args.mode, out) for n in nodes))

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:  # pragma: no cover
        asyncio.run(main())
    return 0


class Clients:
    """The client processes, and what they reported, by proxy id."""

    def __init__(self, procs: list[subprocess.Popen], ids: list[str]) -> None:
        self.procs = procs
        self.ids = ids
        self.lock = threading.Lock()
        self.acks: dict[str, list[dict]] = {i: [] for i in ids}
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._read, args=(p,), daemon=True) for p in procs]
        for t in self.threads:
            t.start()

    def _read(self, p: subprocess.Popen) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "v" in d:
                    self.acks[d["id"]].append(d)
                else:
                    self.errors.append(f"{d['id']}: {d.get('error') or 'connection closed'}")

    def wait_all(self, pred, timeout: float, what: str) -> dict[str, dict]:
        """Wait until each proxy has an ACK satisfying ``pred``; return the first such per proxy."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = {}
                for i in self.ids:
                    hit = next((a for a in self.acks[i] if pred(a)), None)
                    if hit is not None:
                        got[i] = hit
                errors = list(self.errors)
            if len(got) == len(self.ids):
                return got
            if errors:
                raise BenchError(f"discovery clients failed: {errors[:3]}")
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise BenchError(f"a client process exited with code {dead[0].returncode}")
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}: "
                                 f"{len(got)} of {len(self.ids)} proxies")
            time.sleep(0.005)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


# --------------------------------------------------------------------------- 2. apply -> ACK


class Api:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token

    def apply(self, docs: list[dict], timeout: float = 120.0) -> dict:
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}).encode()
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            c.request("POST", "/api/v1/apply?filename=bench.json", body=body,
                      headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
        finally:
            c.close()
        if r.status != 200:
            raise BenchError(f"apply answered {r.status}: {data[:500]!r}")
        return json.loads(data)


def start_controlplane(tmp: Path) -> tuple[subprocess.Popen, Api, str, Path]:
    name = "controlplane"
    state = tmp / name
    err = tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDEVMODE", "PYTHONASYNCIODEBUG",
                                                              "PYTHONTRACEMALLOC", "PILOTFISH_STATE")}
    exe = REPO / ".venv" / "bin" / "pilotfish"
    cmd = [str(exe), "controlplane"] if exe.exists() else [sys.executable, "-m", "pilotfish", "controlplane"]
    p = subprocess.Popen([*cmd, "--state-dir", str(state), "--api-address", "127.0.0.1:0",
                          "--discovery-address", "127.0.0.1:0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(err, "w"),
                         start_new_session=True, cwd=str(REPO), env=env)
    deadline = time.monotonic() + 30
    while True:
        text = err.read_text(errors="replace") if err.exists() else ""
        m = re.search(r"ready; api http://([\d.]+):(\d+) discovery ([\d.]+:\d+)", text)
        if m:
            break
        if p.poll() is not None or time.monotonic() > deadline:
            stop(p)
            raise BenchError(f"pilotfish controlplane did not start: {text[-2000:]}")
        time.sleep(0.05)
    token = (state / "token").read_text().strip()
    return p, Api(m.group(1), int(m.group(2)), token), m.group(3), err


def start_clients(args: argparse.Namespace, tmp: Path, nodes: list[model.Node], discovery: str,
                  mode: str, token_file: Path) -> Clients:
    procs = []
    k = max(1, min(args.client_procs, len(nodes)))
    for j in range(k):
        part = nodes[j::k]
        path = tmp / f"nodes-{mode}-{j}.json"
        path.write_text(json.dumps([msgspec.to_builtins(n) for n in part]))
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--phase", "clients", "--nodes", str(path), "--discovery", discovery,
             "--token-file", str(token_file), "--mode", mode, "--client-nice", str(args.client_nice)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(tmp / f"clients-{mode}-{j}.log", "w"),
            text=True, start_new_session=True, cwd=str(REPO)))
    return Clients(procs, [n.id for n in nodes])


def apply_rounds(args: argparse.Namespace, api: Api, clients: Clients, cp: subprocess.Popen, first_weight: int,
                 label: str) -> dict:
    args.quiet.wait((cp.pid, *(p.pid for p in clients.procs)))
    rows = []
    cp_cpu0, cl_cpu0, m0, t_start = cpu_seconds(cp.pid), clients.cpu(), machine_cpu_seconds(), time.monotonic()
    for k in range(args.applies):
        weight = first_weight - k
        t0 = time.monotonic()
        api.apply([virtual_service(0, args.namespaces, weight)])
        t_api = time.monotonic() - t0
        got = clients.wait_all(lambda a, w=weight, t0=t0: a["w"] == w and a["recv"] >= t0, 60,
                               f"every proxy to ACK weight {weight}")
        acks = [a["ack"] - t0 for a in got.values()]
        recvs = [a["recv"] - t0 for a in got.values()]
        versions = {a["v"] for a in got.values()}
        rows.append({"all_ack": max(acks), "first_ack": min(acks), "last_recv": max(recvs), "api": t_api,
                     "after_api": max(acks) - t_api,
                     "decode_ms": sum(a["dec"] for a in got.values()) / len(got) * 1000,
                     "kb": sum(a["kb"] for a in got.values()) / len(got), "versions": len(versions)})
        log(f"  {label} apply {k + 1:2d}/{args.applies}: all ACKed after {max(acks):.3f} s "
            f"(first {min(acks):.3f} s, api {t_api:.3f} s, {len(versions)} version(s))")
        time.sleep(args.pause)
    wall = time.monotonic() - t_start
    n = len(rows)
    all_ack = [r["all_ack"] for r in rows]
    cp_cpu, cl_cpu = cpu_seconds(cp.pid) - cp_cpu0, clients.cpu() - cl_cpu0
    return {
        "p50": pct(all_ack, 50), "p99": pct(all_ack, 99), "max": max(all_ack), "min": min(all_ack),
        "first_ack_p50": pct([r["first_ack"] for r in rows], 50),
        "last_recv_p50": pct([r["last_recv"] for r in rows], 50),
        "last_recv_p99": pct([r["last_recv"] for r in rows], 99),
        "api_p50": pct([r["api"] for r in rows], 50), "api_max": max(r["api"] for r in rows),
        "after_api_p50": pct([r["after_api"] for r in rows], 50),
        "after_api_p99": pct([r["after_api"] for r in rows], 99),
        "decode_ms_mean": sum(r["decode_ms"] for r in rows) / n,
        "snapshot_kb": sum(r["kb"] for r in rows) / n,
        "cp_cpu_per_apply": cp_cpu / n, "clients_cpu_per_apply": cl_cpu / n,
        "others_cpu": max(0.0, ((machine_cpu_seconds() - m0) - cp_cpu - cl_cpu) / wall - 0.02),
        "single_version": all(r["versions"] == 1 for r in rows),
        "samples": [round(x, 4) for x in all_ack],
    }


def apply_runs(args: argparse.Namespace, tmp: Path, modes: list[tuple[str, int]]) -> dict:
    """One control plane (the current one, or with the old encoding), loaded with the mesh;
    for each client mode, connect the clients and time the applies."""
    res: dict = {}
    cp, api, discovery, cp_log = start_controlplane(tmp)
    label = ""
    clients = None
    try:
        log(f"  {label}control plane up (discovery {discovery}); loading the "
            f"{'unscoped' if args.apply_unscoped else 'scoped'} mesh through the API ...")
        t = time.monotonic()
        api.apply(mesh_docs(args.services, args.namespaces, scoped=not args.apply_unscoped))
        res["load_s"] = time.monotonic() - t
        nodes = proxy_nodes(args.services, args.namespaces, args.proxies)
        step = max(1, len(nodes) // args.connections)
        nodes = nodes[::step][: args.connections]
        res["connections"] = len(nodes)
        token_file = Path(cp_log.parent / "controlplane" / "token")
        for mode, first_weight in modes:
            t = time.monotonic()
            clients = start_clients(args, tmp, nodes, discovery, mode, token_file)
            clients.wait_all(lambda a: True, 300, "every proxy's first snapshot")
            res[f"connect_{mode}_s"] = time.monotonic() - t
            log(f"  {label}{len(nodes)} {mode} clients synced in "
                f"{res[f'connect_{mode}_s']:.2f} s")
            res[mode] = apply_rounds(args, api, clients, cp, first_weight, label + mode)
            res[f"cp_rss_{mode}_mb"] = proc_status_mb("VmRSS", cp.pid)
            stop(*clients.procs)
            clients = None
    except BenchError as e:
        raise BenchError(f"{e}\n--- control plane log ---\n{cp_log.read_text(errors='replace')[-2000:]}") from None
    finally:
        if clients is not None:
            stop(*clients.procs)
        stop(cp)
    return res


def phase_apply(args: argparse.Namespace, tmp: Path) -> dict:
    modes = [("decode", 89), ("raw", 59)]
    if not args.no_whole_apply:
        modes.append(("whole", 29))
    return apply_runs(args, tmp, modes)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 100 services, 200 proxies, 20 connections, 5 applies")
    ap.add_argument("--services", type=int, help="services (default 1000; --quick 100)")
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--proxies", type=int, help="simulated sidecars for the full push, at most 2 per service "
                                                "(default 2000; --quick 200)")
    ap.add_argument("--connections", type=int, help="real discovery connections (default 100; --quick 20)")
    ap.add_argument("--applies", type=int, help="applies per client mode (default 20; --quick 5)")
    ap.add_argument("--client-procs", type=int, default=2, help="processes the connections are spread over (default 2)")
    ap.add_argument("--client-nice", type=int, default=10,
                    help="niceness of the client processes (default 10: the control plane goes first)")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between applies (default 0.3)")
    ap.add_argument("--legacy-sample", type=int, default=100,
                    help="proxies the old per-proxy encoding is measured on (default 100)")
    ap.add_argument("--legacy-all", action="store_true", help="also time the old encoding for every proxy (slow)")
    ap.add_argument("--apply-unscoped", action="store_true", help="apply -> ACK on the unscoped mesh (slow)")
    ap.add_argument("--skip-apply", action="store_true", help="only the full-push measurements")
    ap.add_argument("--no-whole-apply", action="store_true",
                    help="skip apply -> ACK with clients that take whole snapshots instead of deltas")
    ap.add_argument("--quiet-wait", type=float, help="seconds, in all, to wait for other processes to go quiet "
                                                     "before measurements (default 120; --quick 0)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    # internal: the child processes
    ap.add_argument("--phase", choices=["push", "clients"], help=argparse.SUPPRESS)
    ap.add_argument("--scoped", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--nodes", help=argparse.SUPPRESS)
    ap.add_argument("--discovery", help=argparse.SUPPRESS)
    ap.add_argument("--token-file", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["decode", "raw", "whole"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = args.quick
    args.services = args.services or (100 if q else 1000)
    args.proxies = min(args.proxies or (200 if q else 2000), 2 * args.services)
    args.connections = min(args.connections or (20 if q else 100), args.proxies)
    args.applies = args.applies or (5 if q else 20)
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if q else 120.0
    args.quiet = Quiet(args.quiet_wait)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.phase == "push":
        print(json.dumps(phase_push(args)))
        return 0
    if args.phase == "clients":
        return phase_clients(args)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    result: dict = {"ok": False, "quick": args.quick, "services": args.services, "namespaces": args.namespaces,
                    "proxies": args.proxies}
    tmp = Path(tempfile.mkdtemp(prefix="pilotfish-bench-cp-"))
    try:
        log(f"full push, unscoped: {args.services} services, {args.proxies} proxies ...")
        un = run_push_child(args, False, args.quiet)
        log("full push, scoped (a Sidecar per namespace) ...")
        sc = run_push_child(args, True, args.quiet)
        ap = None
        if not args.skip_apply:
            log(f"apply -> all ACK, {args.connections} connections, {args.applies} applies per client mode ...")
            ap = phase_apply(args, tmp)
        result.update(summarize(args, un, sc, ap))
        result["ok"] = True
    except BenchError as e:
        result["error"] = str(e)
        log(f"error: {e}")
    except KeyboardInterrupt:
        result["error"] = "interrupted"
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def summarize(args: argparse.Namespace, un: dict, sc: dict, ap: dict | None) -> dict:
    n = un["proxies"]
    legacy_est = un["full_push_encoded_translate_s"] + un["legacy_ms_per_proxy"] * n / 1000
    out = {
        "full_push_s": r4(un["full_push_s"]),
        "apply_to_ack_p99_s": r4(ap["decode"]["p99"]) if ap else None,
        "snapshot_kb_per_proxy": round(un["snapshot_kb_mean"], 1),
        "snapshot_kb_per_proxy_scoped": round(sc["snapshot_kb_mean"], 1),
        "rss_mb": round(un["rss_mb"], 1),
        "full_push_encoded_s": r4(un["full_push_encoded_s"]),
        "full_push_legacy_encoded_s_est": r4(legacy_est),
        "encode_ms_per_proxy": r4((un["full_push_encoded_hash_s"] + un["full_push_encoded_message_s"]) / n * 1000),
        "legacy_encode_ms_per_proxy": r4(un["legacy_ms_per_proxy"]),
        "encode_speedup": round(un["legacy_ms_per_proxy"] / max(1e-9, un["new_ms_per_proxy"]), 1),
        "view_registry_s": r4(un["view_registry_s"]),
        "first_proxy_s": r4(un["first_proxy_s"]),
        "full_push_encoded_translate_s": r4(un["full_push_encoded_translate_s"]),
        "full_push_encoded_hash_s": r4(un["full_push_encoded_hash_s"]),
        "full_push_encoded_message_s": r4(un["full_push_encoded_message_s"]),
        "full_push_encoded_gc_s": r4(un["full_push_encoded_gc_s"]),
        "full_push_gc_s": r4(un["full_push_gc_s"]),
        "new_encode_ms_per_proxy_warm": r4(un["new_ms_per_proxy"]),
        "legacy_sample": un["legacy_sample"],
        "legacy_all_encode_s": r4(un.get("legacy_all_encode_s")),
        "wire_identical": un["wire_identical"] and sc["wire_identical"],
        "snapshot_kb_max": round(un["snapshot_kb_max"], 1),
        "clusters_per_proxy": un["clusters_per_proxy"], "virtual_hosts_per_proxy": un["virtual_hosts_per_proxy"],
        "clusters_per_proxy_scoped": sc["clusters_per_proxy"],
        "encoder_cache_mb": round(un["encoder_cache_mb"], 1), "encoded_elements": un["encoded_elements"],
        "rss_before_mb": round(un["rss_before_mb"], 1), "rss_peak_mb": round(un["rss_peak_mb"], 1),
        "full_push_scoped_s": r4(sc["full_push_s"]),
        "full_push_encoded_scoped_s": r4(sc["full_push_encoded_s"]),
        "legacy_encode_ms_per_proxy_scoped": r4(sc["legacy_ms_per_proxy"]),
        "encode_ms_per_proxy_scoped": r4((sc["full_push_encoded_hash_s"] + sc["full_push_encoded_message_s"])
                                         / sc["proxies"] * 1000),
        "view_registry_scoped_s": r4(sc["view_registry_s"]),
        "rss_scoped_mb": round(sc["rss_mb"], 1),
        "store_apply_s": r4(un["store_apply_s"]), "objects": un["objects"],
    }
    others = [un["others_cpu"], sc["others_cpu"]]
    if ap:
        d, r = ap["decode"], ap.get("raw")
        out.update({
            "apply_to_ack_p50_s": r4(d["p50"]), "apply_to_ack_max_s": r4(d["max"]),
            "apply_to_first_ack_p50_s": r4(d["first_ack_p50"]),
            "apply_to_last_recv_p50_s": r4(d["last_recv_p50"]), "apply_to_last_recv_p99_s": r4(d["last_recv_p99"]),
            "apply_api_p50_s": r4(d["api_p50"]), "apply_api_max_s": r4(d["api_max"]),
            "api_answer_to_ack_p50_s": r4(d["after_api_p50"]), "api_answer_to_ack_p99_s": r4(d["after_api_p99"]),
            "client_decode_ms_mean": r4(d["decode_ms_mean"]),
            "apply_snapshot_kb": round(d["snapshot_kb"], 1),
            "cp_cpu_s_per_apply": r4(d["cp_cpu_per_apply"]), "clients_cpu_s_per_apply": r4(d["clients_cpu_per_apply"]),
            "cp_rss_mb": round(ap["cp_rss_decode_mb"], 1), "connections": ap["connections"], "applies": args.applies,
            "apply_mesh": "unscoped" if args.apply_unscoped else "scoped",
            "apply_one_version_each": d["single_version"],
            "connect_s": r4(ap["connect_decode_s"]), "load_s": r4(ap["load_s"]),
            "apply_to_ack_samples_s": d["samples"],
        })
        if r is not None:
            out.update({"apply_to_ack_raw_p50_s": r4(r["p50"]), "apply_to_ack_raw_p99_s": r4(r["p99"]),
                        "api_answer_to_ack_raw_p99_s": r4(r["after_api_p99"]),
                        "cp_cpu_s_per_apply_raw": r4(r["cp_cpu_per_apply"])})
            others.append(r["others_cpu"])
        if "whole" in ap:
            g = ap["whole"]
            out.update({"apply_to_ack_whole_p50_s": r4(g["p50"]), "apply_to_ack_whole_p99_s": r4(g["p99"]),
                        "cp_cpu_s_per_apply_whole": r4(g["cp_cpu_per_apply"]),
                        "clients_cpu_s_per_apply_whole": r4(g["clients_cpu_per_apply"]),
                        "client_decode_ms_mean_whole": r4(g["decode_ms_mean"]),
                        "apply_snapshot_kb_whole": round(g["snapshot_kb"], 1)})
            others.append(g["others_cpu"])
        others.append(d["others_cpu"])
    out["others_cpu_max"] = round(max(others), 2)
    print_report(args, out, un, sc, ap)
    return out


def print_report(args: argparse.Namespace, o: dict, un: dict, sc: dict, ap: dict | None) -> None:
    n = un["proxies"]

    def row(*cols: object) -> None:
        print(f"{cols[0]:<44}" + "".join(f"{c!s:>13}" for c in cols[1:]))

    print(f"\nFull push: {args.services} services x 3 ports x (1+2 subsets), {args.namespaces} namespaces, "
          f"{n} sidecars ({un['objects']} objects)")
    row("", "unscoped", "scoped")
    row("clusters per proxy", un["clusters_per_proxy"], sc["clusters_per_proxy"])
    row("snapshot per proxy, mean (KB)", f"{un['snapshot_kb_mean']:.1f}", f"{sc['snapshot_kb_mean']:.1f}")
    row("view + registry (s)", f"{un['view_registry_s']:.3f}", f"{sc['view_registry_s']:.3f}")
    row("first proxy, cold caches (s)", f"{un['first_proxy_s']:.3f}", f"{sc['first_proxy_s']:.3f}")
    row(f"translate {n} proxies (s)", f"{un['full_push_s']:.3f}", f"{sc['full_push_s']:.3f}")
    row(f"translate + encode {n} proxies (s)", f"{un['full_push_encoded_s']:.3f}", f"{sc['full_push_encoded_s']:.3f}")
    row("  of which translate", f"{un['full_push_encoded_translate_s']:.3f}",
        f"{sc['full_push_encoded_translate_s']:.3f}")
    row("  of which hash (prepare)", f"{un['full_push_encoded_hash_s']:.3f}", f"{sc['full_push_encoded_hash_s']:.3f}")
    row("  of which message bytes", f"{un['full_push_encoded_message_s']:.3f}",
        f"{sc['full_push_encoded_message_s']:.3f}")
    row("  (cyclic GC, within the above)", f"{un['full_push_encoded_gc_s']:.3f}", f"{sc['full_push_encoded_gc_s']:.3f}")
    row("encode per proxy, old way (ms)", f"{un['legacy_ms_per_proxy']:.2f}", f"{sc['legacy_ms_per_proxy']:.2f}")
    row("encode per proxy, shared pieces (ms)", f"{un['new_ms_per_proxy']:.2f}", f"{sc['new_ms_per_proxy']:.2f}")
    row("translate + encode, old way (s, est.)", f"{o['full_push_legacy_encoded_s_est']:.1f}",
        f"{sc['full_push_encoded_translate_s'] + sc['legacy_ms_per_proxy'] * sc['proxies'] / 1000:.1f}")
    row("RSS after the push (MiB)", f"{un['rss_mb']:.0f}", f"{sc['rss_mb']:.0f}")
    row("  before the view (store + imports)", f"{un['rss_before_mb']:.0f}", f"{sc['rss_before_mb']:.0f}")
    row("  peak", f"{un['rss_peak_mb']:.0f}", f"{sc['rss_peak_mb']:.0f}")
    row("encoder cache (MiB)", f"{un['encoder_cache_mb']:.1f}", f"{sc['encoder_cache_mb']:.1f}")
    print(f"  old-way figures: measured on {un['legacy_sample']} of the proxies, times {n} for the estimate; "
          f"new bytes identical to the old: {o['wire_identical']}")
    if ap:
        d = ap["decode"]
        print(f"\nApply -> every proxy ACKed: {ap['connections']} connections, {args.applies} applies, "
              f"{o['apply_mesh']} mesh ({d['snapshot_kb']:.0f} KB per delta message), "
              f"clients in {args.client_procs} processes at nice {args.client_nice}")
        row("", "p50 (s)", "p99 (s)", "max (s)")
        row("deltas, clients assemble a ProxyConfig", f"{d['p50']:.3f}", f"{d['p99']:.3f}", f"{d['max']:.3f}")
        row("  last snapshot received", f"{d['last_recv_p50']:.3f}", f"{d['last_recv_p99']:.3f}")
        row("  first ACK", f"{d['first_ack_p50']:.3f}")
        row("  the apply request itself", f"{d['api_p50']:.3f}", "", f"{d['api_max']:.3f}")
        row("  from its answer to all ACKed", f"{d['after_api_p50']:.3f}", f"{d['after_api_p99']:.3f}")
        if "raw" in ap:
            r = ap["raw"]
            row("clients ACK without decoding", f"{r['p50']:.3f}", f"{r['p99']:.3f}", f"{r['max']:.3f}")
            row("  from the API's answer", f"{r['after_api_p50']:.3f}", f"{r['after_api_p99']:.3f}")
        if "whole" in ap:
            g = ap["whole"]
            row(f"whole snapshots ({g['snapshot_kb']:.0f} KB), clients decode", f"{g['p50']:.3f}", f"{g['p99']:.3f}",
                f"{g['max']:.3f}")
        print(f"  per apply: control plane CPU {d['cp_cpu_per_apply']:.2f} s, clients CPU "
              f"{d['clients_cpu_per_apply']:.2f} s ({d['decode_ms_mean']:.1f} ms per assembly)"
              + (f"; with whole snapshots {ap['whole']['clients_cpu_per_apply']:.2f} s "
                 f"({ap['whole']['decode_ms_mean']:.1f} ms per decode)" if "whole" in ap else "")
              + f"; control plane RSS {ap['cp_rss_decode_mb']:.0f} MiB")
    if o["others_cpu_max"] > 0.1:
        print(f"WARNING: other processes used up to {o['others_cpu_max']:.2f} CPU during the measurements")
    t = [f"full push {o['full_push_s']:.2f} s (target < 5)", f"RSS {o['rss_mb']:.0f} MiB (target < 1024)"]
    if ap:
        t.append(f"apply->all-ACK p99 {o['apply_to_ack_p99_s']:.3f} s (target < 1)")
    print("targets: " + "; ".join(t))


if __name__ == "__main__":
    sys.exit(main())
