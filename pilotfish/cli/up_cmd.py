"""``pilotfish up``, ``pilotfish down`` and ``pilotfish demo``: the mesh on one machine.

    pilotfish up                 # control plane, runtime and ingress gateway, until Ctrl-C
    pilotfish up -d              # the same in the background (pid and log in the state dir)
    pilotfish down               # stop everything, and check nothing is left behind
    pilotfish demo               # up + bookinfo + its gateway, wait for /productpage, then serve

See :mod:`pilotfish.runtime.mesh` for what runs and :mod:`pilotfish.runtime.controller` for
how Deployments become pods.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_API = "127.0.0.1:15080"
DEMO_FILES = (
    "samples/bookinfo/platform/bookinfo.yaml",
    "samples/bookinfo/networking/bookinfo-gateway.yaml",
    "samples/bookinfo/networking/destination-rule-all.yaml",
)

EXPLICIT_MODE_LIMITS = """\
In explicit proxy mode (no network namespaces):
  - nothing is intercepted: an app's calls go through its sidecar only if it honours
    $HTTP_PROXY, and only plain HTTP does (TCP services are not reachable through the sidecar,
    and hosts outside the mesh registry get 404 instead of passing through);
  - an app listens on the port in $PORT (not its containerPort), on the shared host network;
    its sidecar serves the workload's ports on the pod's address 127.0.1.N; anything that
    connects to the app's own port directly bypasses the sidecar;
  - Service names and ClusterIPs do not resolve in pods (no per-pod /etc/hosts): names are
    resolved by the sidecar's routes, so apps must call http://NAME:PORT through the proxy;
  - a pod without a sidecar gets $PORT like the others, so nothing serves its pod address:
    pods that should be reachable need the sidecar;
  - pods are not isolated from each other or from the host."""

EPILOG = """\
modes: with root, `ip` and `iptables`, each pod runs in its own network namespace with
Istio's iptables interception; otherwise (or with --explicit) the mesh runs in explicit proxy
mode, says so when it starts, and has these limits:
""".rstrip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verb = parser.prog.split()[-1]
    parser.add_argument("--state-dir", metavar="DIR",
                        help="state directory (default: $PILOTFISH_STATE or ~/.pilotfish)")
    if verb == "down":
        parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                            help="how long to wait for the mesh to stop before killing it (default 60)")
        return
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG + "\n" + EXPLICIT_MODE_LIMITS
    parser.add_argument("-d", "--detach", action="store_true",
                        help="run in the background (pid file and log file in the state directory)")
    if verb == "up":
        parser.add_argument("--demo", action="store_true", help="also run the bookinfo demo (as `pilotfish demo`)")
    parser.add_argument("--api-address", default=DEFAULT_API, metavar="HOST:PORT",
                        help=f"the control plane's HTTP API (default {DEFAULT_API})")
    parser.add_argument("--discovery-port", type=int, default=15010, metavar="PORT",
                        help="the discovery port proxies connect to (default 15010; on the bridge address "
                             "with network namespaces, else 127.0.0.1)")
    parser.add_argument("--gateway-address", default="127.0.0.1", metavar="IP",
                        help="where the ingress gateway listens (default 127.0.0.1)")
    parser.add_argument("--port-map", action="append", default=[], metavar="PORT:HOSTPORT",
                        help="a Gateway server port the gateway listens on elsewhere, e.g. 80:8080 (repeatable)")
    parser.add_argument("--pod-cidr", default="10.244.0.0/16", help="pod addresses (default 10.244.0.0/16)")
    parser.add_argument("--service-cidr", default="10.96.0.0/16", help="ClusterIPs (default 10.96.0.0/16)")
    parser.add_argument("--bridge", default="pf0", help="the pods' bridge (default pf0)")
    parser.add_argument("--netns-prefix", default="pf", metavar="PREFIX",
                        help="prefix of the pods' network namespaces and veths (default pf; at most 6 characters)")
    parser.add_argument("--explicit", action="store_true",
                        help="explicit proxy mode even where network namespaces are possible")
    parser.add_argument("--workdir", metavar="DIR",
                        help="containers' working directory (default: the Pilotfish checkout, else the "
                             "current directory)")
    parser.add_argument("--wait-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="how long to wait for pods to become ready (default 120)")
    parser.add_argument("--backoff-base", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--daemon-child", action="store_true", help=argparse.SUPPRESS)


# --------------------------------------------------------------------------- helpers


def _state_dir(args: argparse.Namespace) -> Path:
    d = args.state_dir or os.environ.get("PILOTFISH_STATE") or "~/.pilotfish"
    return Path(d).expanduser().resolve()


def _port_map(items: list[str]) -> dict[int, int]:
    out = {}
    for item in items:
        a, sep, b = item.partition(":")
        if not sep or not a.isdigit() or not b.isdigit() or not (0 < int(a) < 65536 and 0 < int(b) < 65536):
            raise ValueError(f"--port-map {item!r}: expected PORT:HOSTPORT, e.g. 80:8080")
        out[int(a)] = int(b)
    return out


def _options(args: argparse.Namespace) -> Any:
    from pilotfish.controlplane.server import parse_address
    from pilotfish.runtime.mesh import MeshOptions, default_workdir

    return MeshOptions(
        state_dir=_state_dir(args),
        api=parse_address(args.api_address, 15080),
        discovery_port=args.discovery_port,
        gateway_address=args.gateway_address,
        port_map=_port_map(args.port_map),
        pod_cidr=args.pod_cidr,
        service_cidr=args.service_cidr,
        bridge=args.bridge,
        prefix=args.netns_prefix,
        explicit=args.explicit,
        workdir=Path(args.workdir).resolve() if args.workdir else default_workdir(),
        backoff_base=args.backoff_base,
    )


def _argv(args: argparse.Namespace, verb: str) -> list[str]:
    """The command line of the background process (``-d`` replaced by --daemon-child)."""
    out = [verb, "--state-dir", str(_state_dir(args)), "--api-address", args.api_address,
           "--discovery-port", str(args.discovery_port), "--gateway-address", args.gateway_address,
           "--pod-cidr", args.pod_cidr, "--service-cidr", args.service_cidr, "--bridge", args.bridge,
           "--netns-prefix", args.netns_prefix, "--wait-timeout", str(args.wait_timeout),
           "--backoff-base", str(args.backoff_base), "--daemon-child"]
    for pm in args.port_map:
        out += ["--port-map", pm]
    if args.explicit:
        out.append("--explicit")
    if args.workdir:
        out += ["--workdir", str(Path(args.workdir).resolve())]
    if getattr(args, "demo", False):
        out.append("--demo")
    return out


def _say(s: str) -> None:
    print(s, flush=True)


def _env_hints(opts: Any) -> list[str]:
    hints = []
    api = f"{opts.api[0]}:{opts.api[1]}"
    if api != DEFAULT_API:
        hints.append(f"export PILOTFISH_API={api}")
    default_state = Path(os.environ.get("PILOTFISH_STATE") or "~/.pilotfish").expanduser().resolve()
    if opts.state_dir != default_state:
        hints.append(f"export PILOTFISH_STATE={opts.state_dir}")
    return hints


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    verb = getattr(args, "command", None) or "up"
    if verb == "down":
        return run_down(args)
    demo = verb == "demo" or getattr(args, "demo", False)
    try:
        opts = _options(args)
    except ValueError as e:
        print(f"pilotfish {verb}: {e}", file=sys.stderr)
        return 2
    from pilotfish.runtime.mesh import read_info

    running = _running_pid(opts.state_dir)
    if running is not None and not args.daemon_child:
        if demo:
            return _demo_on_running(opts, read_info(opts.state_dir) or {})
        print(f"pilotfish {verb}: a mesh is already running from {opts.state_dir} (pid {running}); "
              "`pilotfish down` stops it", file=sys.stderr)
        return 1
    if args.detach and not args.daemon_child:
        return _detach(args, verb, opts)
    return _run_loop(_foreground(opts, args, demo))


def _run_loop(coro: Any) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        import asyncio

        return asyncio.run(coro)


def _running_pid(state_dir: Path) -> int | None:
    from pilotfish.runtime.mesh import PID_FILE, pid_alive

    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and pid_alive(pid) else None


async def _foreground(opts: Any, args: argparse.Namespace, demo: bool) -> int:
    import asyncio

    from pilotfish.runtime.mesh import Mesh, MeshError, run_until_signal

    mesh = Mesh(opts, _say, EXPLICIT_MODE_LIMITS)
    _say(f"pilotfish up: starting the mesh (state {opts.state_dir})")
    stop = asyncio.Event()
    signals = asyncio.get_running_loop().create_task(run_until_signal(stop))
    try:
        await mesh.start()
    except MeshError as e:
        print(f"pilotfish up: {e}", file=sys.stderr, flush=True)
        mesh.write_info("failed")
        return 1
    except Exception as e:
        print(f"pilotfish up: cannot start: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    code = 0
    try:
        if demo:
            if not await _apply_demo(mesh):
                code = 1
        waiter = asyncio.get_running_loop().create_task(_wait_and_report(mesh, args.wait_timeout, demo))
        stopper = asyncio.get_running_loop().create_task(stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            ok = waiter.result()
            code = code or (0 if ok else 1)
            mesh.write_info("ready" if ok else "failed")
            if not args.daemon_child:
                _say("Ctrl-C stops the mesh.")
            await stopper
        else:
            waiter.cancel()
    finally:
        _say("pilotfish up: stopping...")
        info = mesh.info("stopping")
        await mesh.stop()
        signals.cancel()
        from pilotfish.runtime.mesh import leftovers

        left = leftovers(info, opts.state_dir)
        if left:
            _say("pilotfish up: stopped, but LEFT BEHIND: " + "; ".join(left))
            code = code or 1
        else:
            _say("pilotfish up: stopped; nothing left behind.")
    return code


async def _wait_and_report(mesh: Any, timeout: float, demo: bool) -> bool:
    """Wait for the pods (and, for the demo, /productpage through the gateway); print the
    outcome. True if everything became ready."""
    import asyncio

    pending = mesh.pending()
    pods = [p for p in pending if not isinstance(p, str)]
    if pods or any(isinstance(p, str) and p != "gateway" for p in pending):
        _say(f"waiting for pods to become ready (up to {timeout:g}s)...")
    failures = await mesh.wait_ready(timeout)
    if failures:
        _say("")
        _say(f"NOT READY after {timeout:g}s:")
        for line in failures:
            _say(f"  {line}")
        _say("The mesh keeps running: fix and re-apply, `pilotfish logs POD -c CONTAINER`, or `pilotfish down`.")
        return False
    n = len(mesh.controller.pods) if mesh.controller else 0
    ports = mesh.gateway_ports()
    addr = mesh.opts.gateway_address
    _say(f"ready in {time.monotonic() - mesh.t0:.1f}s: {n} pod{'s' if n != 1 else ''}, "
         f"ingress gateway on {addr} ({', '.join(map(str, ports)) or 'no Gateway applied yet'})")
    if demo:
        port = mesh.opts.port_map.get(8080, 8080)
        url = f"http://{addr}:{port}/productpage"
        t0 = time.monotonic()
        status, why = 0, ""
        while time.monotonic() - t0 < timeout:
            status, why = await asyncio.to_thread(_get_status, url)
            if status == 200:
                break
            await asyncio.sleep(0.3)
        if status != 200:
            nack = mesh.gateway_nack()
            _say(f"{url} does not answer 200 ({why or status})" + (f"; the gateway rejected its "
                                                                   f"configuration: {nack}" if nack else ""))
            return False
        _say(f"bookinfo answers through the gateway {time.monotonic() - mesh.t0:.1f}s after start: {url}")
        _say(_next_steps(mesh.opts, url))
    else:
        hints = _env_hints(mesh.opts)
        _say("Next: " + "; ".join([*hints, "pilotfish apply -f FILE", "pilotfish get pods -A"]))
    return True


def _get_status(url: str) -> tuple[int, str]:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=10)
    try:
        conn.request("GET", u.path)
        r = conn.getresponse()
        r.read()
        return r.status, r.reason
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e)
    finally:
        conn.close()


def _istio_dir(opts: Any) -> str:
    p = opts.workdir.parent / "shared" / "istio" / "bookinfo"
    if not p.is_dir():
        return "../shared/istio/bookinfo"
    try:
        return os.path.relpath(p)
    except ValueError:
        return str(p)


def _next_steps(opts: Any, url: str) -> str:
    d = _istio_dir(opts)
    env = "".join(f"  {h}\n" for h in _env_hints(opts))
    return f"""
Bookinfo is running. Open {url} in a browser, or try:
{env}  curl -s {url} | grep -o '<title>.*</title>'
  pilotfish get pods                  # READY 2/2: each pod has its istio-proxy sidecar
  pilotfish get svc                   # ClusterIPs
  pilotfish proxy-status
  pilotfish logs -c istio-proxy -f $(pilotfish get pods -o name | grep productpage | cut -d/ -f2)

Istio's traffic-management tasks, with Istio's own files:
  pilotfish apply -f {d}/virtual-service-all-v1.yaml            # everyone gets reviews v1: no stars
  pilotfish apply -f {d}/virtual-service-reviews-test-v2.yaml   # sign in as jason: black stars
  pilotfish apply -f {d}/virtual-service-reviews-50-v3.yaml     # half the pages: red stars
  pilotfish apply -f {d}/virtual-service-ratings-test-delay.yaml   # jason: 7s delay, reviews unavailable
  pilotfish apply -f {d}/virtual-service-ratings-test-abort.yaml   # jason: ratings unavailable
  pilotfish explain productpage GET http://reviews:9080/reviews/0 -H 'end-user: jason'
  pilotfish analyze
"""


async def _apply_demo(mesh: Any) -> bool:
    import asyncio

    from pilotfish.api.loader import LoadError, load_text
    from pilotfish.config import ApplyError

    resources = []
    for rel in DEMO_FILES:
        path = mesh.opts.workdir / rel
        try:
            resources.extend(load_text(path.read_text(), rel))
        except (OSError, LoadError) as e:
            _say(f"demo: cannot read {path}: {e}")
            return False
    try:
        results = await asyncio.to_thread(mesh.store.apply, resources)
    except ApplyError as e:
        _say("demo: the bookinfo files were refused:")
        for i in e.issues:
            _say(f"  {i}")
        return False
    changed = sum(1 for r in results if r.action in ("created", "configured"))
    _say(f"demo: applied {', '.join(DEMO_FILES)} ({changed} objects created or changed)")
    return True


def _demo_on_running(opts: Any, info: dict[str, Any]) -> int:
    """``demo`` while a mesh runs: apply bookinfo to it, wait for /productpage, print."""
    from pilotfish.cli.client import ApiError, Client

    api = info.get("api") or f"{opts.api[0]}:{opts.api[1]}"
    host, _, port = api.rpartition(":")
    try:
        token = (opts.state_dir / "token").read_text().strip()
    except OSError:
        token = None
    client = Client(host, int(port), token)
    files = []
    for rel in DEMO_FILES:
        files.append((rel, (opts.workdir / rel).read_text()))
    try:
        client.apply(files)
    except ApiError as e:
        print(f"pilotfish demo: {e.message}", file=sys.stderr)
        return 1
    gw = info.get("gateway") or {}
    pm = {int(k): v for k, v in (gw.get("portMap") or {}).items()}
    url = f"http://{gw.get('address') or opts.gateway_address}:{pm.get(8080, 8080)}/productpage"
    _say(f"a mesh is already running (pid {info.get('pid')}); applied bookinfo to it, waiting for {url}...")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if _get_status(url)[0] == 200:
            _say(_next_steps(opts, url))
            _say("The mesh keeps running; `pilotfish down` stops it.")
            return 0
        time.sleep(0.5)
    _say(f"{url} did not answer 200 within 120s; see `pilotfish get pods` and `pilotfish logs`")
    return 1


# --------------------------------------------------------------------------- -d


def _detach(args: argparse.Namespace, verb: str, opts: Any) -> int:
    from pilotfish.runtime.mesh import LOG_FILE, read_info

    st = opts.state_dir
    st.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = st / LOG_FILE
    cmd = [sys.executable, "-m", "pilotfish", *_argv(args, verb)]
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + args.wait_timeout + 120
    code = None
    with open(log_path, "rb") as f:
        f.seek(offset)
        while True:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            info = read_info(st)
            if info and info.get("pid") == proc.pid and info.get("state") in ("ready", "failed"):
                time.sleep(0.1)
                rest = f.read()
                if rest:
                    sys.stdout.write(rest.decode("utf-8", "replace"))
                code = 0 if info["state"] == "ready" else 1
                break
            if proc.poll() is not None:
                rest = f.read()
                if rest:
                    sys.stdout.write(rest.decode("utf-8", "replace"))
                print(f"pilotfish {verb}: the background mesh exited (code {proc.returncode}); log: {log_path}",
                      file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"pilotfish {verb}: the background mesh did not report ready in time; log: {log_path}",
                      file=sys.stderr)
                code = 1
                break
            time.sleep(0.1)
    _say(f"the mesh runs in the background (pid {proc.pid}); log {log_path}; `pilotfish down` stops it")
    return code


# --------------------------------------------------------------------------- down


def run_down(args: argparse.Namespace) -> int:
    import signal

    from pilotfish.runtime.controller import kill_recorded
    from pilotfish.runtime.mesh import LOG_FILE, PID_FILE, leftovers, pid_alive, read_info

    st = _state_dir(args)
    info = read_info(st)
    pid = _running_pid(st)
    code = 0
    if pid is not None:
        _say(f"stopping the mesh (pid {pid})...")
        log_path = st / LOG_FILE
        offset = log_path.stat().st_size if log_path.exists() else 0
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            offset = _echo_from(log_path, offset)
        _echo_from(log_path, offset)
        if pid_alive(pid):
            _say(f"the mesh did not stop within {args.timeout:g}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            code = 1
    else:
        _say(f"no mesh is running from {st}")
    # what a crashed or killed run left behind
    notes = []
    killed = kill_recorded(st / "pids.json")
    if killed:
        notes.append(f"{len(killed)} process group(s) killed")
    if (st / "network" / "network.json").exists():
        if os.geteuid() == 0:
            from pilotfish.runtime.network import NetworkError, cleanup_stale

            try:
                removed = cleanup_stale(st / "network")
                if removed:
                    notes.append("removed " + ", ".join(removed))
            except NetworkError as e:
                _say(f"cannot clean the network: {e}")
                code = 1
        else:
            _say(f"{st / 'network'} records a pod network: run `pilotfish down` as root to remove it")
            code = 1
    for name in (PID_FILE, "up.json"):
        with contextlib.suppress(OSError):
            (st / name).unlink()
    if notes:
        _say("cleaned up: " + "; ".join(notes))
    left = leftovers(info, st)
    if left:
        _say("LEFT BEHIND:")
        for item in left:
            _say(f"  {item}")
        return 1
    what = "processes, network namespaces, veths or iptables rules" if (info or {}).get("network") else "processes"
    _say(f"down: nothing left behind (no {what})")
    return code


def _echo_from(path: Path, offset: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    if data:
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()
    return offset + len(data)
