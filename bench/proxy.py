#!/usr/bin/env python3
"""Data-plane benchmark: Pilotfish proxy latency, throughput, CPU and memory, each against a
baseline measured in the same run (a direct connection, nginx).

    python bench/proxy.py            # full run, about 3 minutes on a quiet machine
    python bench/proxy.py --quick    # smoke test, about 35 s

What it measures (see bench/README.md for how to read the output):

1. latency p50/p90/p99 at a fixed 1000 rps over 4 keep-alive connections (Istio's published
   set-up), measured from the intended send time (no coordinated omission), for: direct to
   the upstream, one Pilotfish proxy, a Pilotfish sidecar pair, one nginx proxy and an nginx
   pair. The load generator is bench/loadgen.c, compiled with gcc at bench time.
2. saturated throughput (wrk, keep-alive) of one Pilotfish proxy process against one nginx
   worker proxying to the same upstream, with the CPU each spent per 1000 rps.
3. the resident memory of an idle Pilotfish proxy and of one holding 1000 clusters.

The upstream is nginx answering ``return 200`` with a 1 KiB body. Pilotfish proxies run as a
sidecar runs: access log on, written to stdout, which is redirected to a file; stats on.
The last line printed is one JSON object with every figure.

Only the standard library is used, so any python3 can run this file; the proxy itself is
started from the repository's virtualenv (``.venv/bin/pilotfish``) unless ``--pilotfish``
says otherwise. Everything started here runs in its own process group and is stopped on exit,
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import http.client
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BODY_LEN = 1024
RATE = 1000  # requests per second, in total, for the latency runs
CONNS = 4  # connections for the latency runs (250 rps each)
WRK_CONNS = 32


class BenchError(Exception):
    """A measurement could not be made; the message says why. No number is reported for it."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


class Procs:
    """Every process the bench starts. Each runs in its own session (process group), so that
    stopping it also stops whatever it forked (nginx workers, proxy workers)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.logs: dict[int, Path] = {}  # pid -> file with its stderr (or error log)

    def start(self, name: str, argv: list[str], stdout=None, stderr=None, **kw) -> subprocess.Popen:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=stderr if stderr is not None else subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )
        self.procs.append((name, p))
        return p

    def run(self, name: str, argv: list[str], timeout: float, **kw) -> str:
        """Run to completion (bounded by ``timeout``) and return its stdout."""
        p = self.start(name, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            raise BenchError(f"{name} did not finish within {timeout:.0f} s")
        except BaseException:  # Ctrl-C, SIGTERM: it must not outlive us
            self.stop(p)
            raise
        self.forget(p)
        if p.returncode != 0:
            raise BenchError(f"{name} failed (exit {p.returncode}): {(err + out).strip()[-2000:]}")
        return out

    def dead(self) -> str:
        """Which long-running processes have died, with the end of what they said."""
        out = []
        for name, p in self.procs:
            if p.poll() is not None:
                hint = ""
                if p.returncode in (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL):
                    hint = " (stopped from outside the bench? something may kill by name)"
                out.append(f"{name} (pid {p.pid}) has exited with code {p.returncode}{hint}")
                log_file = self.logs.get(p.pid)
                if log_file and log_file.exists():
                    out.append(log_file.read_text(errors="replace")[-2000:])
        return "\n".join(out)

    def forget(self, p: subprocess.Popen) -> None:
        self.procs = [(n, q) for n, q in self.procs if q is not p]

    def stop(self, *ps: subprocess.Popen, grace: float = 3.0) -> None:
        """SIGTERM to each group, then, after ``grace`` seconds at most, SIGKILL."""
        for p in ps:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in ps:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
        for p in ps:
            # the group may outlive its leader (a worker that ignored SIGTERM)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2.0)
            self.forget(p)

    def stop_all(self) -> None:
        self.stop(*[p for _, p in self.procs])


def _on_term(signum, frame):  # SIGTERM / SIGHUP -> unwind through the finally blocks
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- /proc


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (all threads), in seconds."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLK_TCK


def _machine_ticks() -> tuple[int, int]:
    """(user+nice+system, steal) of all CPUs, from /proc/stat, in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], v[7] if len(v) > 7 else 0


def _rusage_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class Bystanders:
    """CPU that something outside the bench used during a measurement (another test run, a
    build; short-lived processes included), and the time the hypervisor stole from this VM:
    signs that the figures are disturbed. It is the machine's user+system time less that of
    the bench's own processes (running, and reaped children such as the load generator)."""

    def __init__(self, procs: Procs) -> None:
        self.procs = procs

    def _ours(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    def start(self) -> None:
        self.pids = [p.pid for _, p in self.procs.procs if p.poll() is None]
        self.m0, self.s0 = _machine_ticks()
        self.o0 = self._ours()
        self.c0 = _rusage_s(resource.RUSAGE_CHILDREN) + _rusage_s(resource.RUSAGE_SELF)
        self.t0 = time.monotonic()

    def stop(self) -> tuple[float, float]:
        """(cores used by others, cores stolen) since start()."""
        m1, s1 = _machine_ticks()
        o1 = self._ours()
        c1 = _rusage_s(resource.RUSAGE_CHILDREN) + _rusage_s(resource.RUSAGE_SELF)
        wall = max(1e-9, time.monotonic() - self.t0)
        others = (m1 - self.m0) / CLK_TCK - (o1 - self.o0) - (c1 - self.c0)
        return max(0.0, others / wall), (s1 - self.s0) / CLK_TCK / wall


OTHERS_MAX = 0.1  # CPU others may use during a measurement before it counts as disturbed
STEAL_MAX = 0.05


def disturbed(r: dict) -> bool:
    return r["others_cpu"] > OTHERS_MAX or r["steal_cpu"] > STEAL_MAX


class Quiet:
    """On a shared machine: wait (a bounded time) for the others to go quiet before a
    measurement, and repeat (a bounded number of times) one they disturbed, keeping the
    least disturbed. Nothing is hidden: each result carries its own disturbance."""

    def __init__(self, procs: Procs, retries: int, budget_s: float) -> None:
        self.procs, self.retries, self.budget = procs, retries, budget_s
        self.repeats = 0

    def wait(self) -> None:
        t0 = time.monotonic()
        said = False
        while time.monotonic() - t0 < min(30.0, self.budget):
            b = Bystanders(self.procs)
            b.start()
            time.sleep(1.0)
            others, steal = b.stop()
            if others <= OTHERS_MAX and steal <= STEAL_MAX:
                break
            if not said:
                log(f"  waiting for the machine to be quiet (others {others:.2f} CPU, "
                    f"stolen {steal:.2f}) ...")
                said = True
        self.budget -= time.monotonic() - t0

    def measure(self, fn):
        best = None
        for attempt in range(self.retries + 1):
            if self.budget > 0:
                self.wait()
            r = fn()
            r["attempts"] = attempt + 1
            if best is None or r["others_cpu"] + r["steal_cpu"] < best["others_cpu"] + best["steal_cpu"]:
                best = r
            if not disturbed(r):
                break
            if attempt < self.retries:
                self.repeats += 1
                log(f"  disturbed (others {r['others_cpu']:.2f} CPU, stolen "
                    f"{r['steal_cpu']:.2f}); measuring again")
        return best


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants, in MiB."""
    kb = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb += int(line.split()[1])
        except FileNotFoundError:
            pass
    return kb / 1024


# --------------------------------------------------------------------------- helpers


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(port: int, host: str | None = None, path: str = "/", timeout: float = 2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_ready(name: str, proc: subprocess.Popen, port: int, timeout: float,
               stderr_file: Path | None = None, host: str | None = None) -> float:
    """Until a GET through ``port`` answers 200 with the 1 KiB body. Returns seconds waited."""
    t0 = time.monotonic()
    last = "no answer"
    answered = None  # when the listener first answered (with anything)
    while time.monotonic() - t0 < timeout:
        # up, but answering wrongly for 10 s: it will not get better by waiting
        if answered is not None and time.monotonic() - answered > 10:
            break
        if proc.poll() is not None:
            tail = ""
            if stderr_file and stderr_file.exists():
                tail = stderr_file.read_text(errors="replace")[-3000:]
            raise BenchError(f"{name} exited with code {proc.returncode} before it was ready.\n{tail}")
        try:
            status, body = http_get(port, host=host, timeout=1.0)
            if status == 200 and len(body) == BODY_LEN:
                return time.monotonic() - t0
            last = f"HTTP {status}, {len(body)} bytes of body"
            answered = answered or time.monotonic()
        except http.client.HTTPException as e:  # connected, but no valid answer
            last = str(e) or type(e).__name__
            answered = answered or time.monotonic()
        except OSError as e:
            last = str(e) or type(e).__name__
        time.sleep(0.05)
    tail = ""
    if stderr_file and stderr_file.exists():
        tail = "\n" + stderr_file.read_text(errors="replace")[-3000:]
    raise BenchError(f"{name} did not serve a GET through port {port} within "
                     f"{time.monotonic() - t0:.0f} s (last: {last}){tail}")


def warm(port: int, n: int = 20, host: str | None = None) -> None:
    for _ in range(n):
        status, body = http_get(port, host=host)
        if status != 200 or len(body) != BODY_LEN:
            raise BenchError(f"GET through port {port}: HTTP {status}, {len(body)} bytes")


def pct(sorted_vals: list[int] | array.array, p: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in ms."""
    n = len(sorted_vals)
    if not n:
        return float("nan")
    return sorted_vals[max(0, math.ceil(p / 100 * n) - 1)] / 1e6


def ensure_debian_tools() -> None:
    missing = [t for t in ("nginx", "wrk", "gcc") if not shutil.which(t)]
    # nginx lives in /usr/sbin, which a non-root PATH may lack
    if "nginx" in missing and os.path.exists("/usr/sbin/nginx"):
        missing.remove("nginx")
    if not missing:
        return
    if os.geteuid() != 0:
        raise BenchError(
            f"missing tools: {', '.join(missing)}; install them as root: "
            f"apt-get install -y {' '.join(missing)} (or run ./scripts/setup.sh as root)"
        )
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env, timeout=900, stdout=subprocess.DEVNULL)
    if "nginx" in missing:  # the package starts a service on port 80; we only want the binary
        subprocess.run(["service", "nginx", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, timeout=60)


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


# --------------------------------------------------------------------------- nginx


def nginx_conf(tmp: Path, name: str, server: str, upstream_block: str = "",
               access_log: str = "off") -> Path:
    d = tmp / name
    d.mkdir()
    user = "user root;" if os.geteuid() == 0 else ""
    temps = "\n".join(
        f"    {k}_temp_path {d}/{k}_temp;" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = f"""# generated by bench/proxy.py
{user}
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {access_log};
{temps}
    keepalive_timeout 300s;
    keepalive_requests 1000000;
{upstream_block}
    server {{
{server}
    }}
}}
"""
    path = d / "nginx.conf"
    path.write_text(conf)
    return path


def start_nginx(procs: Procs, tmp: Path, name: str, conf: Path, port: int) -> subprocess.Popen:
    d = conf.parent
    err = open(d / "stderr", "wb")
    p = procs.start(name, [nginx_bin(), "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)],
                    stderr=err)
    err.close()
    procs.logs[p.pid] = d / "error.log"
    wait_ready(name, p, port, 15, stderr_file=d / "error.log")
    return p


def start_upstream(procs: Procs, tmp: Path, ports: list[int]) -> subprocess.Popen:
    body = "".join(chr(ord("a") + i % 26) for i in range(BODY_LEN - 1)) + "\n"
    listens = "\n".join(f"        listen 127.0.0.1:{p} backlog=4096;" for p in ports)
    server = f"""{listens}
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}"""
    conf = nginx_conf(tmp, "upstream", server)
    return start_nginx(procs, tmp, "nginx upstream", conf, ports[0])


def start_nginx_proxy(procs: Procs, tmp: Path, name: str, port: int, target: int) -> subprocess.Popen:
    """One nginx worker proxying to 127.0.0.1:target over pooled keep-alive connections, with
    its access log written to a file (as the Pilotfish proxies do)."""
    upstream = f"""    upstream target {{
        server 127.0.0.1:{target};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}"""
    server = f"""        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://target;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}"""
    conf = nginx_conf(tmp, name.replace(" ", "-"), server, upstream,
                      access_log=str(tmp / f"{name.replace(' ', '-')}.access.log"))
    return start_nginx(procs, tmp, name, conf, port)


# --------------------------------------------------------------------------- pilotfish


def pilotfish_cmd(arg: str | None) -> list[str]:
    if arg:
        return shlex.split(arg)
    venv = REPO / ".venv" / "bin" / "pilotfish"
    if venv.exists():
        return [str(venv)]
    return [sys.executable, "-m", "pilotfish"]


def check_pilotfish(cmd: list[str]) -> None:
    """Fail loudly, before anything is measured, when ``pilotfish proxy --config`` is not there."""
    try:
        r = subprocess.run([*cmd, "proxy", "--help"], capture_output=True, text=True, timeout=60,
                           cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"cannot run {shlex.join(cmd)} proxy --help: {e}")
    if r.returncode != 0 or "--config" not in r.stdout:
        raise BenchError(
            f"the Pilotfish proxy is not runnable: `{shlex.join(cmd)} proxy --help` "
            f"(exit {r.returncode}) does not offer --config.\n{(r.stdout + r.stderr).strip()[-1500:]}\n"
            "No Pilotfish figure can be measured; use --baselines-only to check the harness."
        )


def simple_proxy_config(name: str, port: int, admin_port: int, cluster: str, target: int,
                        direction: str, route_name: str) -> dict:
    """The contract of issue 2: one listener, one route table, one STATIC cluster. The access
    log goes to /dev/stdout (the default), which the bench redirects to a file."""
    return {
        "version": "1",
        "node": {"role": "sidecar", "name": name, "namespace": "default"},
        "admin": {"address": "127.0.0.1", "port": admin_port},
        "access_log": {"path": "/dev/stdout"},
        "listeners": [
            {
                "name": f"127.0.0.1_{port}",
                "address": "127.0.0.1",
                "port": port,
                "default_filter_chain": {
                    "http": {"route_config": route_name, "traffic_direction": direction}
                },
            }
        ],
        "routes": [
            {
                "name": route_name,
                "virtual_hosts": [
                    {
                        "name": "upstream",
                        "domains": ["*"],
                        "routes": [
                            {"match": {"uri": {"prefix": "/"}},
                             "route": {"clusters": [{"cluster": cluster}]}}
                        ],
                    }
                ],
            }
        ],
        "clusters": [{"name": cluster, "type": "STATIC"}],
        "endpoints": [{"cluster": cluster, "endpoints": [{"address": "127.0.0.1", "port": target}]}],
    }


def many_clusters_config(n: int, port: int, admin_port: int, upstream_ports: list[int]) -> dict:
    """A sidecar that knows ``n`` services, as Istio gives one in a mesh of ``n`` services
    without a Sidecar resource: ``n`` EDS clusters with two endpoints each (labels, locality),
    ``n`` virtual hosts with Istio's domain variants, one route each."""
    clusters, endpoints, vhosts = [], [], []
    for i in range(n):
        svc = f"svc-{i:04d}"
        fqdn = f"{svc}.bench.svc.cluster.local"
        cname = f"outbound|8080||{fqdn}"
        clusters.append({"name": cname, "type": "EDS", "lb_policy": "LEAST_REQUEST",
                         "connect_timeout": "10s",
                         "metadata": {"services": [{"host": fqdn, "name": svc, "namespace": "bench"}]}})
        endpoints.append({"cluster": cname, "endpoints": [
            {"address": "127.0.0.1", "port": p, "labels": {"app": svc, "version": f"v{j + 1}"},
             "locality": f"region-a/zone-{j}"}
            for j, p in enumerate(upstream_ports)
        ]})
        vhosts.append({
            "name": f"{fqdn}:8080",
            "domains": [fqdn, f"{fqdn}:8080", f"{svc}.bench.svc", f"{svc}.bench.svc:8080",
                        f"{svc}.bench", f"{svc}.bench:8080", svc, f"{svc}:8080"],
            "routes": [{"name": "default", "match": {"uri": {"prefix": "/"}},
                        "route": {"clusters": [{"cluster": cname}], "retries": {"attempts": 2}}}],
        })
    return {
        "version": "1",
        "node": {"role": "sidecar", "name": "many", "namespace": "bench"},
        "admin": {"address": "127.0.0.1", "port": admin_port},
        "access_log": {"path": "/dev/stdout"},
        "listeners": [{
            "name": f"127.0.0.1_{port}", "address": "127.0.0.1", "port": port,
            "default_filter_chain": {"http": {"route_config": "8080",
                                              "traffic_direction": "OUTBOUND"}},
        }],
        "routes": [{"name": "8080", "virtual_hosts": vhosts}],
        "clusters": clusters,
        "endpoints": endpoints,
    }


# Interpreter settings that change what is measured: the proxy runs with its own defaults
# (in particular its own buffering of stdout, where the access log goes).
_DROP_ENV = {"PYTHONUNBUFFERED", "PYTHONDEVMODE", "PYTHONASYNCIODEBUG", "PYTHONTRACEMALLOC",
             "PYTHONMALLOC", "PYTHONMALLOCSTATS", "PYTHONPROFILEIMPORTTIME", "PYTHONWARNINGS",
             "PYTHONINSPECT", "PYTHONVERBOSE"}


def proxy_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _DROP_ENV}


def start_pilotfish(procs: Procs, tmp: Path, cmd: list[str], name: str, config: dict,
                    port: int, timeout: float = 60, host: str | None = None):
    """Write the config, start the proxy with stdout (its access log) and stderr to files,
    wait until a GET through it succeeds. Returns (process, seconds to ready)."""
    slug = name.replace(" ", "-")
    cfg = tmp / f"{slug}.yaml"
    # JSON is YAML: the proxy's loader reads it as is, and json needs no third-party module.
    cfg.write_text(json.dumps(config, indent=1))
    out = open(tmp / f"{slug}.stdout", "wb")
    err = open(tmp / f"{slug}.stderr", "wb")
    p = procs.start(name, [*cmd, "proxy", "--config", str(cfg)], stdout=out, stderr=err, cwd=tmp,
                    env=proxy_env())
    out.close()
    err.close()
    procs.logs[p.pid] = tmp / f"{slug}.stderr"
    secs = wait_ready(name, p, port, timeout, stderr_file=tmp / f"{slug}.stderr", host=host)
    return p, secs


# --------------------------------------------------------------------------- load


def build_loadgen(tmp: Path) -> Path:
    exe = tmp / "loadgen"
    r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(HERE / "loadgen.c")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise BenchError(f"compiling bench/loadgen.c failed:\n{r.stderr}")
    return exe


def latency_run(procs: Procs, tmp: Path, loadgen: Path, label: str, port: int,
                duration: float, warmup: float, cpu_pids: dict[str, int] | None = None,
                load_cpus: set[int] | None = None) -> dict:
    """Fixed-rate load through ``port``; percentiles in ms from the intended send time."""
    raw = tmp / f"lat-{label}.raw"
    before = {k: cpu_seconds(p) for k, p in (cpu_pids or {}).items()}
    others = Bystanders(procs)
    others.start()
    t0 = time.monotonic()
    out = procs.run(
        f"loadgen ({label})",
        [str(loadgen), "-a", "127.0.0.1", "-p", str(port), "-r", str(RATE), "-c", str(CONNS),
         "-d", str(duration), "-w", str(warmup), "-o", str(raw), "-b", str(BODY_LEN), "-t", "5"],
        timeout=duration + warmup + 30,
        **({"preexec_fn": lambda: os.sched_setaffinity(0, load_cpus)} if load_cpus else {}),
    )
    wall = time.monotonic() - t0
    after = {k: cpu_seconds(p) for k, p in (cpu_pids or {}).items()}
    res_others, res_steal = others.stop()
    summary = json.loads(out.strip().splitlines()[-1])
    samples = array.array("q")
    samples.frombytes(raw.read_bytes())
    lat = sorted(samples[0::3])
    svc = sorted(samples[1::3])
    bad = summary["errors"] + summary["non2xx"] + summary["bad_body"] + summary["dropped"] + summary["incomplete"]
    if bad > 0.01 * summary["scheduled"] or not lat:
        raise BenchError(f"{label}: {bad} of {summary['scheduled']} requests failed: {summary}")
    res = summarize(lat, svc)
    res.update({"failed": bad, "rps": summary["achieved_rps"], "others_cpu": res_others,
                "steal_cpu": res_steal,
                "wake_p50_us": summary["wakeup_lateness_p50_us"],
                "wake_p99_us": summary["wakeup_lateness_p99_us"], "loadgen": summary})
    # CPU of the processes under test while they carried the fixed 1000 rps (Istio's
    # "vCPU per 1000 rps" is measured this way); warm-up included, so divide by wall time.
    for k in before:
        res[f"cpu_{k}"] = (after[k] - before[k]) / wall / (RATE / 1000)
    return res


def summarize(lat: list[int], svc: list[int]) -> dict:
    """Percentiles (ms) of sorted latencies (from the intended send time) and service times
    (from the actual send)."""
    return {
        "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "p999": pct(lat, 99.9),
        "max": lat[-1] / 1e6, "mean": sum(lat) / len(lat) / 1e6,
        "svc_p50": pct(svc, 50), "svc_p90": pct(svc, 90), "svc_p99": pct(svc, 99),
        "n": len(lat), "lat": lat, "svc": svc,
    }


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` and its descendants may run on ``cpus`` only."""
    for p in tree_pids(pid):
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for t in tasks:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(t), cpus)


def throughput_run(procs: Procs, label: str, port: int, pid: int, duration: float,
                   warmup: float, upstream_pid: int, load_cpus: set[int] | None) -> dict:
    url = f"http://127.0.0.1:{port}/"
    # wrk takes whole seconds only
    duration, warmup = max(1, math.ceil(duration)), math.ceil(warmup)
    kw = {"preexec_fn": lambda: os.sched_setaffinity(0, load_cpus)} if load_cpus else {}
    if warmup > 0:
        procs.run(f"wrk warm-up ({label})",
                  ["wrk", "-t1", f"-c{WRK_CONNS}", f"-d{warmup}s", url], timeout=warmup + 30, **kw)
    others = Bystanders(procs)
    others.start()
    c0, u0, t0 = cpu_seconds(pid), cpu_seconds(upstream_pid), time.monotonic()
    out = procs.run(f"wrk ({label})",
                    ["wrk", "-t1", f"-c{WRK_CONNS}", f"-d{duration}s", "--timeout", "5s", url],
                    timeout=duration + 30, **kw)
    c1, u1, t1 = cpu_seconds(pid), cpu_seconds(upstream_pid), time.monotonic()
    others_cpu, steal_cpu = others.stop()
    m = _WRK_RPS.search(out)
    tot = _WRK_TOTAL.search(out)
    if not m or not tot:
        raise BenchError(f"{label}: cannot read wrk's output:\n{out}")
    rps, total = float(m.group(1)), int(tot.group(1))
    non2xx = int(_WRK_NON2XX.search(out).group(1)) if _WRK_NON2XX.search(out) else 0
    se = _WRK_SOCKERR.search(out)
    sockerr = sum(int(x) for x in se.groups()) if se else 0
    if total == 0 or non2xx + sockerr > 0.01 * total:
        raise BenchError(f"{label}: {non2xx} non-2xx and {sockerr} socket errors in {total} "
                         f"requests; not a valid throughput figure.\n{out}")
    wall = t1 - t0
    cpu = c1 - c0
    return {"rps": rps, "requests": total, "errors": non2xx + sockerr, "cpu_util": cpu / wall,
            "upstream_cpu_util": (u1 - u0) / wall, "others_cpu": others_cpu,
            "steal_cpu": steal_cpu,
            "cpu_per_1000rps": (cpu / wall) / (rps / 1000)}


def mean_runs(rs: list[dict]) -> dict:
    return {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]}


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}x"


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="short runs (a smoke test of the harness, under a minute); noisy figures")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds of each fixed-rate latency run (default 15; 3 with --quick)")
    ap.add_argument("--throughput-duration", type=float, default=None,
                    help="seconds of each wrk run (default 10; 3 with --quick)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="wrk rounds per proxy, alternating, averaged (default 2; 1 with --quick)")
    ap.add_argument("--retries", type=int, default=None,
                    help="repeat a measurement disturbed by other processes up to N times, keeping "
                    "the least disturbed (default 2; 0 with --quick)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="seconds in all to wait for other processes to go quiet before "
                    "measurements (default 180; 0 with --quick)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the proxy under wrk to its own CPU")
    ap.add_argument("--layout", choices=["both", "nodes", "shared"], default="both",
                    help="latency layouts: 'nodes' places the client side (load generator, client "
                    "sidecar, single proxy) on one CPU and the server side (server sidecar, "
                    "upstream) on the other, as two machines would; 'shared' lets the scheduler "
                    "place everything; 'both' (default) runs shared (the headline keys), then "
                    "nodes (keys prefixed nodes_)")
    ap.add_argument("--clusters", type=int, default=1000,
                    help="clusters in the large-config memory test (default 1000)")
    ap.add_argument("--pilotfish", default=None,
                    help="command that runs pilotfish (default: the repo's .venv/bin/pilotfish)")
    ap.add_argument("--baselines-only", action="store_true",
                    help="measure only the direct and nginx cases (checks the harness without a proxy)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = ap.parse_args(argv)
    lat_d = args.duration or (3.0 if args.quick else 15.0)
    tput_d = args.throughput_duration or (3.0 if args.quick else 10.0)
    warm_lat = 0.5 if args.quick else 2.0
    warm_tput = 1.0 if args.quick else 2.0
    tput_rounds = args.rounds or (1 if args.quick else 2)
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    quiet_budget = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 180.0)
    if not (0 < lat_d <= 600 and 0 < tput_d <= 600 and 1 <= args.clusters <= 100000
            and 1 <= tput_rounds <= 10 and 0 <= retries <= 5 and 0 <= quiet_budget <= 1800):
        ap.error("durations must be within (0, 600] s, --rounds within 1..10, --retries within "
                 "0..5, --quiet-wait within 0..1800 s and --clusters within 1..100000")

    # Ctrl-C must interrupt even when started with SIGINT ignored (as a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="pilotfish-bench-"))
    result: dict = {"ok": False}
    try:
        try:
            run(args, procs, tmp, lat_d, tput_d, warm_lat, warm_tput, tput_rounds, retries,
                quiet_budget, result)
        except BenchError as e:
            dead = procs.dead()  # a crashed proxy is the likeliest reason: say so
            raise BenchError(f"{e}\n{dead}" if dead else str(e)) from None
        result["ok"] = True
        return_code = 0
    except BenchError as e:
        log(f"\nbench/proxy.py: FAILED: {e}")
        result["error"] = str(e).splitlines()[0] if str(e) else "failed"
        return_code = 1
    except KeyboardInterrupt:
        log("\nbench/proxy.py: interrupted")
        result["error"] = "interrupted"
        return_code = 130
    except SystemExit as e:  # SIGTERM, SIGHUP
        log(f"\nbench/proxy.py: terminated ({e.code})")
        result["error"] = "terminated"
        return_code = int(e.code or 1)
    finally:
        # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(headline_first(result)), flush=True)
    return return_code


HEADLINE = ("ok", "error", "pair_p90_added_ms", "pair_p99_added_ms", "rps_ratio_vs_nginx",
            "cpu_per_1000rps", "rss_idle_mb", "rss_1000_clusters_mb", "pilotfish_rps",
            "nginx_rps", "noise_p90_ms")


def headline_first(result: dict) -> dict:
    return {**{k: result[k] for k in HEADLINE if k in result}, **result}


def run(args, procs: Procs, tmp: Path, lat_d: float, tput_d: float, warm_lat: float,
        warm_tput: float, tput_rounds: int, retries: int, quiet_budget: float,
        result: dict) -> None:
    t_start = time.monotonic()
    ensure_debian_tools()
    pf = not args.baselines_only
    cmd = pilotfish_cmd(args.pilotfish)
    if pf:
        check_pilotfish(cmd)
    loadgen = build_loadgen(tmp)

    (up1, up2, ng_single, ng_client, pf_single, pf_client, pf_server, pf_many,
     adm_single, adm_client, adm_server, adm_many) = free_ports(12)

    log(f"temp dir {tmp}; {os.cpu_count()} CPUs; latency runs {lat_d:g} s at {RATE} rps over "
        f"{CONNS} connections; wrk runs {tput_d:g} s with {WRK_CONNS} connections")
    upstream = start_upstream(procs, tmp, [up1, up2])
    # nginx: one proxy in front of the upstream (also the server side of the nginx pair)
    ng_b = start_nginx_proxy(procs, tmp, "nginx proxy", ng_single, up1)
    ng_a = start_nginx_proxy(procs, tmp, "nginx client", ng_client, ng_single)

    pf_procs = {}
    if pf:
        single, s1 = start_pilotfish(procs, tmp, cmd, "pilotfish proxy", simple_proxy_config(
            "proxy", pf_single, adm_single, "outbound|80||upstream.default.svc.cluster.local",
            up1, "OUTBOUND", "80"), pf_single)
        server, _ = start_pilotfish(procs, tmp, cmd, "pilotfish server sidecar", simple_proxy_config(
            "server", pf_server, adm_server, "inbound|80||", up1, "INBOUND", "inbound|80||"),
            pf_server)
        client, _ = start_pilotfish(procs, tmp, cmd, "pilotfish client sidecar", simple_proxy_config(
            "client", pf_client, adm_client, "outbound|80||server.default.svc.cluster.local",
            pf_server, "OUTBOUND", "80"), pf_client)
        pf_procs = {"single": single, "client": client, "server": server}
        result["startup_s"] = r3(s1)

    # ---- 3a. idle memory, before any load: after start-up and a few requests
    warm(ng_single)
    rss_nginx = rss_mb(ng_b.pid)
    if pf:
        warm(pf_single)
        result["rss_idle_mb"] = round(rss_mb(pf_procs["single"].pid), 1)
    result["nginx_rss_idle_mb"] = round(rss_nginx, 1)

    # ---- 1. latency at a fixed 1000 rps. Direct runs first and last: their pooled samples
    # are the baseline, their difference shows the noise floor of this machine and run length.
    # Each layout (see --layout) runs every case; the first gives the unprefixed (headline)
    # keys. The two-node layout places the client side
    # (the load generator, the client sidecar, the single proxy) on one CPU and the server
    # side (the server sidecar, the upstream) on the other, as two machines would.
    cases = [("direct1", up1, {})]
    if pf:
        cases.append(("proxy", pf_single, {"proxy": pf_procs["single"].pid}))
    cases.append(("nginx_proxy", ng_single, {"proxy": ng_b.pid}))
    if pf:
        cases.append(("pair", pf_client, {"client": pf_procs["client"].pid,
                                          "server": pf_procs["server"].pid}))
    cases.append(("nginx_pair", ng_client, {"client": ng_a.pid, "server": ng_b.pid}))
    cases.append(("direct2", up1, {}))
    all_cpus = os.sched_getaffinity(0)
    layouts = ["shared", "nodes"] if args.layout == "both" else [args.layout]
    if len(all_cpus) < 2:
        layouts = ["shared"]
    client_cpu, server_cpu = {min(all_cpus)}, {max(all_cpus)}
    movable = [upstream.pid, ng_a.pid, ng_b.pid, *(p.pid for p in pf_procs.values())]
    quiet = Quiet(procs, retries, quiet_budget)
    lats: dict[str, dict] = {}
    for layout in layouts:
        lat = lats[layout] = {}
        for label, port, pids in cases:
            load_cpus = None
            if layout == "nodes":
                # the server side on one CPU, the client side (with the load) on the other
                for pid in movable:
                    set_affinity(pid, server_cpu)
                for role, pid in pids.items():
                    if role in ("client", "proxy"):
                        set_affinity(pid, client_cpu)
                load_cpus = client_cpu
            log(f"latency ({layout}): {label} ...")
            d = lat[label] = quiet.measure(
                lambda label=label, port=port, pids=pids, load_cpus=load_cpus: latency_run(
                    procs, tmp, loadgen, label, port, lat_d, warm_lat, pids, load_cpus))
            log(f"  p50 {d['p50']:.3f}  p90 {d['p90']:.3f}  p99 {d['p99']:.3f} ms  "
                f"({d['n']} requests; load generator wake-up lateness p99 {d['wake_p99_us']:.0f} us; "
                f"others {d['others_cpu']:.2f} CPU, stolen {d['steal_cpu']:.2f})")
        for pid in movable:
            set_affinity(pid, all_cpus)
        lat["direct"] = summarize(sorted(lat["direct1"]["lat"] + lat["direct2"]["lat"]),
                                  sorted(lat["direct1"]["svc"] + lat["direct2"]["svc"]))
    result["latency_layouts"] = layouts
    lat = lats[layouts[0]]

    # ---- 2. saturated throughput, one process each, alternating nginx and Pilotfish. With
    # pinning, the proxy under test has CPU 1 to itself; wrk and the upstream share CPU 0.
    targets = [("nginx", "nginx proxy", ng_single, ng_b.pid)]
    if pf:
        targets.append(("pilotfish", "pilotfish proxy", pf_single, pf_procs["single"].pid))
    pin = args.pin and len(all_cpus) >= 2
    proxy_cpus, load_cpus = ({max(all_cpus)}, {min(all_cpus)}) if pin else (None, None)
    runs: dict[str, list[dict]] = {k: [] for k, *_ in targets}
    try:
        if pin:
            set_affinity(upstream.pid, load_cpus)
        for rnd in range(tput_rounds):
            for key, label, port, pid in targets:
                log(f"throughput: {label} (round {rnd + 1} of {tput_rounds}) ...")
                if pin:
                    set_affinity(pid, proxy_cpus)
                try:
                    r = quiet.measure(lambda label=label, port=port, pid=pid: throughput_run(
                        procs, label, port, pid, tput_d, warm_tput, upstream.pid, load_cpus))
                finally:
                    if pin:
                        set_affinity(pid, all_cpus)
                log(f"  {r['rps']:.0f} rps, CPU util {r['cpu_util']:.2f}; others "
                    f"{r['others_cpu']:.2f} CPU, stolen {r['steal_cpu']:.2f}")
                runs[key].append(r)
    finally:
        if pin:
            set_affinity(upstream.pid, all_cpus)
    tp_ng = mean_runs(runs["nginx"])
    result["repeated_measurements"] = quiet.repeats
    tp_pf = mean_runs(runs["pilotfish"]) if pf else None
    result["throughput_pinned"] = pin
    result["nginx_rps_rounds"] = [round(r["rps"]) for r in runs["nginx"]]
    if pf:
        result["pilotfish_rps_rounds"] = [round(r["rps"]) for r in runs["pilotfish"]]
        result["rss_after_load_mb"] = round(rss_mb(pf_procs["single"].pid), 1)

    # ---- 3b. memory with a large config; the others are stopped to give it the machine
    if pf:
        procs.stop(*pf_procs.values())
        log(f"memory: pilotfish proxy with {args.clusters} clusters ...")
        cfg = many_clusters_config(args.clusters, pf_many, adm_many, [up1, up2])
        many, secs = start_pilotfish(procs, tmp, cmd, "pilotfish many-clusters", cfg, pf_many,
                                     timeout=180, host="svc-0000.bench.svc.cluster.local")
        step = max(1, args.clusters // 20)
        for i in range(0, args.clusters, step):
            warm(pf_many, n=1, host=f"svc-{i:04d}:8080")
        result["rss_1000_clusters_mb"] = round(rss_mb(many.pid), 1)
        result["startup_1000_clusters_s"] = r3(secs)
        result["config_1000_clusters_kb"] = round((tmp / "pilotfish-many-clusters.yaml").stat().st_size / 1024)
        procs.stop(many)

    # ---- report: the first layout's keys are unprefixed (the headline); the others' are
    # prefixed with the layout's name
    for i, layout in enumerate(layouts):
        lt = lats[layout]
        pre = "" if i == 0 else f"{layout}_"
        base = lt["direct"]
        for label in ("direct", "direct1", "direct2", "proxy", "pair", "nginx_proxy", "nginx_pair"):
            if label in lt:
                for p in ("p50", "p90", "p99"):
                    result[f"{pre}{label}_{p}_ms"] = r3(lt[label][p])
                if not label.startswith("direct"):
                    for p in ("p50", "p90", "p99"):
                        result[f"{pre}{label}_{p}_added_ms"] = r3(lt[label][p] - base[p])
                # fortio-like service time (from the actual send), for comparison
                result[f"{pre}{label}_service_p90_ms"] = r3(lt[label]["svc_p90"])
        result[f"{pre}noise_p90_ms"] = r3(abs(lt["direct2"]["p90"] - lt["direct1"]["p90"]))
        result[f"{pre}noise_p99_ms"] = r3(abs(lt["direct2"]["p99"] - lt["direct1"]["p99"]))
    every_lat = [d for lt in lats.values() for d in lt.values()]
    result["loadgen_wakeup_p50_us"] = max(d["wake_p50_us"] for d in every_lat if "wake_p50_us" in d)
    result["loadgen_wakeup_p99_us"] = max(d["wake_p99_us"] for d in every_lat if "wake_p99_us" in d)
    result["nginx_rps"] = round(tp_ng["rps"])
    result["nginx_cpu_per_1000rps"] = r3(tp_ng["cpu_per_1000rps"])
    result["nginx_cpu_util"] = r3(tp_ng["cpu_util"])
    result["nginx_cpu_per_1000rps_at_1000rps"] = r3(lat["nginx_proxy"]["cpu_proxy"])
    if pf:
        result["pilotfish_rps"] = round(tp_pf["rps"])
        result["rps_ratio_vs_nginx"] = r3(tp_pf["rps"] / tp_ng["rps"])
        result["cpu_per_1000rps"] = r3(tp_pf["cpu_per_1000rps"])
        result["cpu_ratio_vs_nginx"] = r3(tp_pf["cpu_per_1000rps"] / tp_ng["cpu_per_1000rps"])
        result["pilotfish_cpu_util"] = r3(tp_pf["cpu_util"])
        result["cpu_per_1000rps_at_1000rps"] = r3(lat["proxy"]["cpu_proxy"])
        result["pair_cpu_per_1000rps_at_1000rps"] = r3(lat["pair"]["cpu_client"] + lat["pair"]["cpu_server"])
        result["nginx_pair_cpu_per_1000rps_at_1000rps"] = r3(
            lat["nginx_pair"]["cpu_client"] + lat["nginx_pair"]["cpu_server"])
        result["rss_ratio_vs_nginx"] = r3(result["rss_idle_mb"] / result["nginx_rss_idle_mb"])
    every = [d for d in every_lat if "others_cpu" in d] + [r for rs in runs.values() for r in rs]
    result["others_cpu_max"] = r3(max(d["others_cpu"] for d in every))
    result["steal_cpu_max"] = r3(max(d["steal_cpu"] for d in every))
    result["duration_s"] = round(time.monotonic() - t_start, 1)
    result["quick"] = bool(args.quick)
    print_table(result, lats, tp_ng, tp_pf, pf, args.clusters)


LAYOUTS = {
    "nodes": "two-node layout: load generator and client-side proxy on one CPU, server-side "
             "proxy and upstream on the other",
    "shared": "shared layout: every process on both CPUs, as the scheduler places them",
}


def print_table(res: dict, lats: dict, tp_ng: dict, tp_pf: dict | None, pf: bool,
                n_clusters: int) -> None:
    def row(*cols):
        print(f"{cols[0]:<36}" + "".join(f"{c:>12}" for c in cols[1:]))

    for i, (layout, lat) in enumerate(lats.items()):
        pre = "" if i == 0 else f"{layout}_"
        print()
        print(f"Latency at {RATE} rps over {CONNS} keep-alive connections, 1 KiB body "
              f"(ms, from the intended send time); {LAYOUTS[layout]}")
        _latency_rows(row, res, lat, pre)
    print(f"  the load generator woke up {res['loadgen_wakeup_p50_us']:.0f} us (p50) / "
          f"{res['loadgen_wakeup_p99_us']:.0f} us (p99) after a slot, in every case alike")
    _rest_of_table(row, res, tp_ng, tp_pf, pf, n_clusters, list(lats))


def _latency_rows(row, res: dict, lat: dict, pre: str) -> None:
    row("case", "p50", "p90", "p99", "p99.9", "+p50", "+p90", "+p99", "+p90/nginx")
    base = lat["direct"]
    names = {"direct": "direct to upstream (baseline)", "direct1": "  direct, first run",
             "direct2": "  direct, last run", "proxy": "pilotfish proxy",
             "nginx_proxy": "nginx proxy", "pair": "pilotfish sidecar pair",
             "nginx_pair": "nginx pair"}
    for label in names:
        if label not in lat:
            continue
        d = lat[label]
        adds = ["", "", ""]
        if label not in ("direct", "direct1", "direct2"):
            adds = [f"{d[p] - base[p]:+.3f}" for p in ("p50", "p90", "p99")]
        vs = ""
        if label in ("proxy", "pair"):
            ng = lat["nginx_" + label]["p90"] - base["p90"]
            vs = ratio(d["p90"] - base["p90"], ng) if ng > 0 else ""
        mark = " *" if "others_cpu" in d and disturbed(d) else ""
        row(names[label] + mark, f"{d['p50']:.3f}", f"{d['p90']:.3f}", f"{d['p99']:.3f}",
            f"{d['p999']:.3f}", *adds, vs)
    print(f"  noise floor: first vs last direct run differ by {res[pre + 'noise_p90_ms']:.3f} ms at "
          f"p90, {res[pre + 'noise_p99_ms']:.3f} ms at p99")


def _rest_of_table(row, res: dict, tp_ng: dict, tp_pf: dict | None, pf: bool, n_clusters: int,
                   layouts: list[str]) -> None:
    print()
    pinned = ("; the proxy pinned to a CPU of its own, wrk and the upstream on the other"
              if res["throughput_pinned"] else "")
    print(f"Saturated throughput, wrk -t1 -c{WRK_CONNS} keep-alive, one proxy process each, "
          f"mean of {len(res['nginx_rps_rounds'])} round(s){pinned}")
    row("proxy", "rps", "vs nginx", "CPU util", "vCPU/1k rps", "vs nginx", "upstream")
    def mark(tp: dict) -> str:
        return " *" if disturbed(tp) else ""

    row("nginx proxy, 1 worker (baseline)" + mark(tp_ng), f"{tp_ng['rps']:.0f}", "1.00x",
        f"{tp_ng['cpu_util']:.2f}", f"{tp_ng['cpu_per_1000rps']:.3f}", "1.00x",
        f"{tp_ng['upstream_cpu_util']:.2f}")
    if tp_pf:
        row("pilotfish proxy" + mark(tp_pf), f"{tp_pf['rps']:.0f}", ratio(tp_pf["rps"], tp_ng["rps"]),
            f"{tp_pf['cpu_util']:.2f}", f"{tp_pf['cpu_per_1000rps']:.3f}",
            ratio(tp_pf["cpu_per_1000rps"], tp_ng["cpu_per_1000rps"]),
            f"{tp_pf['upstream_cpu_util']:.2f}")
    print("  CPU util is of one core (upstream: the nginx upstream's); near 1.00 means the "
          "proxy was the bottleneck")
    print(f"  vCPU per 1000 rps at a fixed {RATE} rps (Istio's way): nginx proxy "
          f"{res['nginx_cpu_per_1000rps_at_1000rps']:.3f}"
          + (f", pilotfish proxy {res['cpu_per_1000rps_at_1000rps']:.3f} "
             f"({ratio(res['cpu_per_1000rps_at_1000rps'], res['nginx_cpu_per_1000rps_at_1000rps'])}); "
             f"pair: nginx {res['nginx_pair_cpu_per_1000rps_at_1000rps']:.3f}, pilotfish "
             f"{res['pair_cpu_per_1000rps_at_1000rps']:.3f}"
             if pf else ""))
    print()
    if res["others_cpu_max"] > 0.1 or res["steal_cpu_max"] > 0.05:
        print(f"WARNING: during the measurements marked *, processes outside the bench used up "
              f"to {res['others_cpu_max']:.2f} CPU and the hypervisor stole up to "
              f"{res['steal_cpu_max']:.2f} CPU; those figures are disturbed (progress lines on "
              "stderr say by how much; run it on a quiet machine)")
        print()
    print("Memory (VmRSS of the process and its children, MiB)")
    row("process", "RSS", "ratio")
    row("nginx proxy, idle (baseline)", f"{res['nginx_rss_idle_mb']:.1f}", "1.00x")
    if pf:
        row("pilotfish proxy, idle", f"{res['rss_idle_mb']:.1f}",
            ratio(res["rss_idle_mb"], res["nginx_rss_idle_mb"]))
        row("pilotfish proxy, after wrk", f"{res['rss_after_load_mb']:.1f}",
            ratio(res["rss_after_load_mb"], res["nginx_rss_idle_mb"]))
        row(f"pilotfish proxy, {n_clusters} clusters", f"{res['rss_1000_clusters_mb']:.1f}",
            ratio(res["rss_1000_clusters_mb"], res["rss_idle_mb"]) + " idle")
        print(f"  the {n_clusters}-cluster config ({res['config_1000_clusters_kb']} KiB) was "
              f"serving {res['startup_1000_clusters_s']:.2f} s after start")
        print()
        other = "".join(f" ({lay} layout: {res[lay + '_pair_p90_added_ms']:.3f} ms)" for lay in layouts[1:])
        print(f"Targets: pair p90 added <= 0.25 ms: {res['pair_p90_added_ms']:.3f} ms in the "
              f"{layouts[0]} layout{other}; throughput >= 35% of one nginx worker: "
              f"{100 * res['rps_ratio_vs_nginx']:.0f}%; idle RSS <= 40 MB: {res['rss_idle_mb']:.1f} MiB")
    print()


if __name__ == "__main__":
    sys.exit(main())
