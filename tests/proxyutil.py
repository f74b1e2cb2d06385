"""Helpers for integration tests: real upstream and proxy processes on loopback."""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
HTTPBIN = ROOT / "samples" / "httpbin" / "server.py"


_PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range (32768-60999 by default)
_given: set[int] = set()  # ports handed out already (this process), not handed out twice


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a process the test starts to bind soon after.

    It is drawn from below the kernel's ephemeral range: a port the kernel hands out (bind
    to port 0) can be taken again by any outgoing connection in the moment before the
    process under test binds it, which made a listener fail to bind now and then."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _given.add(port)
            return port
    with socket.socket() as s:  # the range is crowded: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """A samples/httpbin server in its own process."""

    def __init__(self, name: str, port: int | None = None, fail_status: int = 0) -> None:
        self.name = name
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HTTPBIN), "--port", str(self.port), "--name", name,
             "--fail-status", str(fail_status)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self.proc.stdout.readline()  # "httpbin NAME listening on ..."
        if "listening" not in line:
            raise RuntimeError(f"upstream {name} did not start: {line}")

    def requests_seen(self) -> list[dict]:
        """What this upstream received (its /_log), oldest first."""
        return get_json(self.port, "/_log")[2]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


def simple_config(listen_port: int, clusters: dict[str, list[int]], routes: list[dict] | None = None,
                  admin_port: int = 0, version: str = "1", http_opts: dict | None = None,
                  cluster_opts: dict[str, dict] | None = None, access_log: dict | None = None,
                  domains: list[str] | None = None, virtual_hosts: list[dict] | None = None) -> dict:
    """A one-listener proxy config; ``clusters`` maps cluster name -> upstream ports."""
    first = next(iter(clusters))
    if routes is None:
        routes = [{"name": "default", "match": {"uri": {"prefix": "/"}},
                   "route": {"clusters": [{"cluster": first}]}}]
    vhosts = virtual_hosts or [{"name": "vh", "domains": domains or ["*"], "routes": routes}]
    return {
        "version": version,
        "node": {"role": "sidecar", "name": "test", "namespace": "default", "labels": {"app": "test"}},
        "admin": {"port": admin_port},
        "access_log": access_log or {"path": "/dev/stdout"},
        "listeners": [{
            "name": f"0.0.0.0_{listen_port}", "address": "127.0.0.1", "port": listen_port,
            "default_filter_chain": {"http": {"route_config": str(listen_port), **(http_opts or {})}},
        }],
        "routes": [{"name": str(listen_port), "virtual_hosts": vhosts}],
        "clusters": [{"name": n, "type": "STATIC", **((cluster_opts or {}).get(n, {}))} for n in clusters],
        "endpoints": [{"cluster": n, "endpoints": [{"address": "127.0.0.1", "port": p} for p in ports]}
                      for n, ports in clusters.items()],
    }


class ProxyProcess:
    """``pilotfish proxy --config`` in its own process, with its admin endpoint."""

    def __init__(self, cfg: dict, tmp: Path, name: str = "proxy") -> None:
        self.admin_port = free_port()
        cfg = dict(cfg)
        cfg["admin"] = {**cfg.get("admin", {}), "port": self.admin_port}
        self.log_path = tmp / f"{name}.log"
        if cfg.get("access_log", {}).get("path") in (None, "/dev/stdout"):
            cfg["access_log"] = {**cfg.get("access_log", {}), "path": str(tmp / f"{name}.access.log")}
        self.access_log_path = Path(cfg["access_log"]["path"])
        self.config_path = tmp / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.listen_port = cfg["listeners"][0]["port"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pilotfish", "proxy", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.log_path.read_text()}")
            try:
                status, _, _ = self.admin("GET", "/ready")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"proxy not ready: {self.log_path.read_text()}")

    def admin(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def push(self, cfg: dict) -> tuple[int, dict]:
        cfg = dict(cfg)
        cfg["admin"] = {"port": self.admin_port}
        cfg.setdefault("access_log", {"path": str(self.access_log_path)})
        if cfg["access_log"].get("path") == "/dev/stdout":
            cfg["access_log"] = {**cfg["access_log"], "path": str(self.access_log_path)}
        status, _, body = self.admin("POST", "/config", json.dumps(cfg).encode())
        return status, json.loads(body)

    def stats(self) -> dict[str, int]:
        _, _, body = self.admin("GET", "/stats")
        out = {}
        for line in body.decode().splitlines():
            k, _, v = line.rpartition(": ")
            out[k] = int(v)
        return out

    def stat(self, name: str) -> int:
        return self.stats().get(name, 0)

    def access_lines(self, wait_for: int = 1, timeout: float = 3.0) -> list[str]:
        end = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < end:
            if self.access_log_path.exists():
                lines = self.access_log_path.read_text().splitlines()
                if len(lines) >= wait_for:
                    return lines
            time.sleep(0.05)
        return lines

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None


def request(port: int, method: str = "GET", path: str = "/", headers: dict | None = None,
            body: bytes | None = None, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def get_json(port: int, path: str = "/anything", headers: dict | None = None) -> tuple[int, dict[str, str], Any]:
    status, h, body = request(port, "GET", path, headers)
    try:
        return status, h, json.loads(body) if body else None
    except ValueError:
        return status, h, body


def raw(port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes, return everything the proxy sends back until it closes (or times out)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


def raw_closed(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send raw bytes; return (response, whether the proxy closed the connection)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        closed = False
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
        return out, closed
    finally:
        s.close()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
