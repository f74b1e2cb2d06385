"""Containers as local processes, their supervision and their probes, with Kubernetes' semantics.

- :class:`Container`: one process in its own process group (optionally inside a pod's network
  namespace and as another uid), stdout and stderr appended as-is to a log file.
- :class:`Backoff` and :class:`Supervisor`: the kubelet's restart loop. Under ``restartPolicy``
  Always (or OnFailure after a failure) an exited container is started again: the first time
  at once, then after 10 s, 20 s, 40 s... up to 300 s (the base is configurable), the delay
  starting over once a run lasted 10 minutes. While it waits, the container is in
  ``CrashLoopBackOff``.
- :class:`Probe`: httpGet / tcpSocket / exec probes with initialDelaySeconds, periodSeconds,
  timeoutSeconds, successThreshold and failureThreshold, as asyncio tasks.

Everything here runs on the caller's asyncio event loop (asyncio or uvloop); a process's exit
is awaited through a pidfd, so nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Backoff", "Container", "Probe", "ProbeError", "Supervisor", "exec_check", "http_get_check",
    "tcp_socket_check", "BACKOFF_BASE", "BACKOFF_CAP", "BACKOFF_RESET",
]

BACKOFF_BASE = 10.0  # the kubelet's first crash-loop delay
BACKOFF_CAP = 300.0  # and its longest
BACKOFF_RESET = 600.0  # a run this long forgets earlier crashes


def _exit_code(returncode: int) -> int:
    """Popen's returncode as a container runtime reports it (a signal N is 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class Container:
    """One container's process.

    ``argv`` runs with exactly ``env`` (nothing inherited) in ``cwd``, in a new session (so
    :meth:`stop` signals its whole process group), prefixed by ``netns_argv_prefix`` (e.g.
    ``["ip", "netns", "exec", NS]``) and, when ``uid`` is given, by ``setpriv`` to run as
    ``uid``/``gid`` (gid defaults to uid; needs root). Output is appended to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: str | Path,
                 log_path: str | Path, netns_argv_prefix: Sequence[str] | None = None,
                 uid: int | None = None, gid: int | None = None) -> None:
        if not argv:
            raise ValueError(f"container {name}: empty command")
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = str(cwd)
        self.log_path = Path(log_path)
        self.netns_argv_prefix = list(netns_argv_prefix or [])
        self.uid = uid
        self.gid = gid
        self._proc: subprocess.Popen | None = None
        self.started_at: float | None = None  # time.time() of the last start
        self.finished_at: float | None = None

    def full_argv(self) -> list[str]:
        out = list(self.netns_argv_prefix)
        if self.uid is not None:
            g = self.uid if self.gid is None else self.gid
            out += ["setpriv", f"--reuid={self.uid}", f"--regid={g}", "--clear-groups", "--"]
        return out + self.argv

    def start(self) -> None:
        """Start the process (OSError if it cannot be started: missing program, bad cwd)."""
        if self.alive:
            raise RuntimeError(f"container {self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab", buffering=0) as log:
            self._proc = subprocess.Popen(self.full_argv(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                          start_new_session=True, close_fds=True)
        self.started_at = time.time()
        self.finished_at = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """None while running (or never started); else the exit status (128 + N for signal N)."""
        if self._proc is None:
            return None
        rc = self._proc.poll()
        if rc is None:
            return None
        if self.finished_at is None:
            self.finished_at = time.time()
        return _exit_code(rc)

    async def wait(self) -> int:
        """Wait for the process to exit; return its exit code."""
        p = self._proc
        if p is None:
            raise RuntimeError(f"container {self.name} was never started")
        while p.poll() is None:
            loop = asyncio.get_running_loop()
            try:
                fd = os.pidfd_open(p.pid)
            except (AttributeError, OSError):
                await asyncio.sleep(0.05)
                continue
            try:
                if p.poll() is not None:  # reaped before the pidfd was opened: fd may be another pid's
                    break
                fut: asyncio.Future[None] = loop.create_future()
                loop.add_reader(fd, lambda f=fut: f.done() or f.set_result(None))
                try:
                    await fut
                finally:
                    loop.remove_reader(fd)
            finally:
                os.close(fd)
        code = self.exit_code
        assert code is not None
        self._reap_group()
        return code

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _reap_group(self) -> None:
        """The main process is gone: like a container runtime, kill what it left in its group."""
        self._signal_group(signal.SIGKILL)

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds; return the exit code
        (None if it was never started)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), grace)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
        return await self.wait()

    def kill(self) -> None:
        """SIGKILL the process group now (synchronous; for emergencies and atexit)."""
        self._signal_group(signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)


class Backoff:
    """The kubelet's crash-loop delays: 0 after the first exit, then ``base``, doubling up to
    ``cap``; forgotten after a run of at least ``reset_after`` seconds."""

    def __init__(self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP, reset_after: float = BACKOFF_RESET) -> None:
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self.exits = 0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after:
            self.exits = 0
        delay = 0.0 if self.exits == 0 else min(self.cap, self.base * 2 ** (self.exits - 1))
        self.exits += 1
        return delay


class Supervisor:
    """Runs one :class:`Container` under a restart policy (``Always``, ``OnFailure``,
    ``Never``) with :class:`Backoff`, and keeps its Kubernetes-style status:

    - ``state``: ``Waiting``, ``Running`` or ``Terminated``;
    - ``reason``: for Waiting ``ContainerCreating`` or ``CrashLoopBackOff`` (or
      ``CreateContainerConfigError`` set by the caller); for Terminated ``Completed`` (exit 0),
      ``Error`` or ``StartError`` (could not start: exit code 128, like containerd's);
    - ``restarts``, ``exit_code`` / ``last_exit_code`` (of the last termination), ``message``.

    ``on_change()`` is called after every change; ``on_start()`` after each start and
    ``on_exit(code)`` after each exit (to start and stop probes). :meth:`restart` kills the
    container for a restart (a failed liveness probe); :meth:`stop` ends it for good."""

    def __init__(self, container: Container, *, restart_policy: str = "Always", backoff: Backoff | None = None,
                 on_change: Callable[[], None] | None = None, on_start: Callable[[], None] | None = None,
                 on_exit: Callable[[int], None] | None = None) -> None:
        if restart_policy not in ("Always", "OnFailure", "Never"):
            raise ValueError(f"restartPolicy {restart_policy!r}: expected Always, OnFailure or Never")
        self.container = container
        self.restart_policy = restart_policy
        self.backoff = backoff or Backoff()
        self.on_change = on_change
        self.on_start = on_start
        self.on_exit = on_exit
        self.state = "Waiting"
        self.reason = "ContainerCreating"
        self.message = ""
        self.restarts = 0
        self.exit_code: int | None = None
        self.last_exit_code: int | None = None
        self.backoff_until: float | None = None
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._attempted = asyncio.Event()  # set after the first start attempt

    @property
    def running(self) -> bool:
        return self.state == "Running"

    @property
    def done(self) -> bool:
        """Terminated for good (policy says no restart, or stopped)."""
        return self._task is not None and self._task.done()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def start(self) -> asyncio.Task:
        """Start supervising (the loop runs as a task); ``await started()`` to know the
        process was launched (or failed to)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"supervise-{self.container.name}")
        return self._task

    async def started(self) -> None:
        """Return once the first start attempt was made."""
        await self._attempted.wait()

    async def _run(self) -> None:
        c = self.container
        if self._stopping:
            self._attempted.set()
        while not self._stopping:
            t0 = time.monotonic()
            try:
                try:
                    c.start()
                finally:
                    self._attempted.set()
            except OSError as e:
                code = 128
                self.state, self.reason = "Terminated", "StartError"
                self.message = f"failed to start {c.argv[0]!r}: {e.strerror or e}"
                with contextlib.suppress(OSError), open(c.log_path, "ab") as log:
                    log.write(f"{self.message}\n".encode())
            else:
                self.state, self.reason, self.message = "Running", "", ""
                self._changed()
                if self.on_start is not None:
                    self.on_start()
                code = await c.wait()
                self.state = "Terminated"
                self.reason = "Completed" if code == 0 else "Error"
            self.last_exit_code = self.exit_code
            self.exit_code = code
            if self.on_exit is not None:
                self.on_exit(code)
            self._changed()
            if self._stopping or self.restart_policy == "Never" or (self.restart_policy == "OnFailure" and code == 0):
                return
            delay = self.backoff.next_delay(time.monotonic() - t0)
            if delay > 0:
                self.state, self.reason = "Waiting", "CrashLoopBackOff"
                self.message = f"back-off {delay:g}s restarting failed container={c.name}"
                self.backoff_until = time.time() + delay
                self._changed()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self.backoff_until = None
                if self._stopping:
                    return
            self.restarts += 1

    async def restart(self, grace: float = 10.0, message: str = "") -> None:
        """Kill the running container; the loop then restarts it (with backoff) per policy."""
        if self.container.alive:
            self.message = message
            await self.container.stop(grace)

    def retire(self) -> None:
        """No more restarts: the container may exit (e.g. a proxy asked to drain) and stays down."""
        self._stopping = True
        self._wake.set()

    async def stop(self, grace: float = 10.0) -> int | None:
        """Stop for good: no more restarts; SIGTERM, SIGKILL after ``grace``."""
        self.retire()
        code = await self.container.stop(grace) if self.container.alive else self.container.exit_code
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        return code


# --------------------------------------------------------------------------- probes


class ProbeError(ValueError):
    """A probe spec that cannot be run (named port unknown, no handler...)."""


Check = Callable[[], Awaitable[bool]]
Connect = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _default_connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


def http_get_check(host: str, port: int, path: str = "/", headers: Sequence[tuple[str, str]] = (),
                   scheme: str = "HTTP", connect: Connect | None = None) -> Check:
    """A check doing the kubelet's GET (``User-Agent: kube-probe``, ``Connection: close``);
    200-399 is success. HTTPS does not verify the certificate, as the kubelet does not."""
    if not path.startswith("/"):
        path = "/" + path
    names = {k.lower() for k, _ in headers}
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = [f"GET {path} HTTP/1.1"]
    if "host" not in names:
        head.append(f"Host: {hostport}")
    if "user-agent" not in names:
        head.append("User-Agent: kube-probe/1.30")
    if "accept" not in names:
        head.append("Accept: */*")
    head += [f"{k}: {v}" for k, v in headers]
    head.append("Connection: close")
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    connect = connect or _default_connect
    tls = scheme.upper() == "HTTPS"

    async def check() -> bool:
        reader, writer = await connect(host, port)
        try:
            if tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                await writer.start_tls(ctx)
            writer.write(request)
            await writer.drain()
            line = await reader.readline()
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                return False
            return 200 <= int(parts[1]) < 400
        finally:
            _close(writer)

    return check


def tcp_socket_check(host: str, port: int, connect: Connect | None = None) -> Check:
    """A check that succeeds when a TCP connection opens."""
    connect = connect or _default_connect

    async def check() -> bool:
        _, writer = await connect(host, port)
        _close(writer)
        return True

    return check


def exec_check(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> Check:
    """A check that succeeds when ``argv`` exits 0 (give the pod's ``exec_argv`` prefix to run
    it in the pod). The probe's timeout kills it."""

    async def check() -> bool:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL, env=dict(env) if env else None,
                                                    cwd=cwd, start_new_session=True)
        try:
            return await proc.wait() == 0
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()

    return check


class Probe:
    """A periodic check with Kubernetes' thresholds.

    ``result`` starts as None (unknown) and becomes True after ``success_threshold``
    consecutive successes, False after ``failure_threshold`` consecutive failures (a check
    that raises or exceeds ``timeout`` fails). ``on_change(result)`` is called when it
    changes. Readiness: ready iff True. Liveness and startup: restart on False."""

    def __init__(self, check: Check, *, kind: str = "", initial_delay: float = 0.0, period: float = 10.0,
                 timeout: float = 1.0, success_threshold: int = 1, failure_threshold: int = 3) -> None:
        self.check = check
        self.kind = kind
        self.initial_delay = initial_delay
        self.period = period
        self.timeout = timeout
        self.success_threshold = max(1, success_threshold)
        self.failure_threshold = max(1, failure_threshold)
        self.result: bool | None = None
        self.last_error = ""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, kind: str, host: str, ports: Mapping[str, int] | None = None,
                  port_map: Callable[[int], tuple[str, int]] | None = None,
                  exec_prefix: Sequence[str] = (), connect: Connect | None = None,
                  env: Mapping[str, str] | None = None, cwd: str | None = None) -> Probe:
        """A probe from a Kubernetes probe spec (``httpGet``, ``tcpSocket`` or ``exec``).

        ``host``: the default target (the pod's IP); ``ports``: the container's named ports;
        ``port_map(port) -> (host, port)``: where a port really is (explicit mode rewrites
        probes of a workload port to the app's own address); ``exec_prefix``: runs exec
        probes in the pod. Defaults: period 10 s, timeout 1 s, success 1, failure 3 (success
        must be 1 for liveness and startup, as Kubernetes requires)."""

        def num(field: str, default: float, minimum: float) -> float:
            v = spec.get(field, default)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < minimum:
                raise ProbeError(f"{kind}Probe.{field}: {v!r} (expected a number >= {minimum:g})")
            return v

        def port_of(value: Any, where: str) -> int:
            if isinstance(value, str) and not value.isdigit():
                if not ports or value not in ports:
                    raise ProbeError(f"{kind}Probe.{where}.port: no container port named {value!r}")
                return ports[value]
            try:
                p = int(value)
            except (TypeError, ValueError):
                raise ProbeError(f"{kind}Probe.{where}.port: {value!r} is not a port")
            if not 0 < p < 65536:
                raise ProbeError(f"{kind}Probe.{where}.port: {p} is not a port")
            return p

        def target(h: str | None, p: int) -> tuple[str, int]:
            if h:
                return h, p
            return port_map(p) if port_map is not None else (host, p)

        if "httpGet" in spec:
            g = spec["httpGet"] or {}
            h, p = target(g.get("host"), port_of(g.get("port"), "httpGet"))
            headers = [(str(x.get("name", "")), str(x.get("value", ""))) for x in g.get("httpHeaders") or []]
            check = http_get_check(h, p, str(g.get("path") or "/"), headers, str(g.get("scheme") or "HTTP"), connect)
        elif "tcpSocket" in spec:
            t = spec["tcpSocket"] or {}
            h, p = target(t.get("host"), port_of(t.get("port"), "tcpSocket"))
            check = tcp_socket_check(h, p, connect)
        elif "exec" in spec:
            cmd = (spec["exec"] or {}).get("command") or []
            if not cmd:
                raise ProbeError(f"{kind}Probe.exec.command: empty")
            check = exec_check([*exec_prefix, *map(str, cmd)], env, cwd)
        else:
            raise ProbeError(f"{kind}Probe: no httpGet, tcpSocket or exec handler (grpc is not supported)")
        success = int(num("successThreshold", 1, 1))
        if kind in ("liveness", "startup") and success != 1:
            raise ProbeError(f"{kind}Probe.successThreshold: must be 1")
        return cls(check, kind=kind, initial_delay=num("initialDelaySeconds", 0, 0), period=num("periodSeconds", 10, 0.01),
                   timeout=num("timeoutSeconds", 1, 0.01), success_threshold=success,
                   failure_threshold=int(num("failureThreshold", 3, 1)))

    async def run(self, on_change: Callable[[bool], None] | None = None) -> None:
        """Probe forever (cancel the task to stop)."""
        await asyncio.sleep(self.initial_delay)
        ok_run = fail_run = 0
        while True:
            t0 = time.monotonic()
            try:
                ok = bool(await asyncio.wait_for(self.check(), self.timeout))
                self.last_error = "" if ok else "check failed"
            except TimeoutError:
                ok, self.last_error = False, f"timeout after {self.timeout:g}s"
            except (OSError, ValueError, EOFError, ssl.SSLError) as e:
                ok, self.last_error = False, str(e) or type(e).__name__
            if ok:
                ok_run, fail_run = ok_run + 1, 0
                new = True if ok_run >= self.success_threshold else self.result
            else:
                ok_run, fail_run = 0, fail_run + 1
                new = False if fail_run >= self.failure_threshold else self.result
            if new != self.result:
                self.result = new
                if on_change is not None and new is not None:
                    on_change(new)
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - t0)))
