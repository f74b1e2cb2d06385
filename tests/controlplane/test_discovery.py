"""The discovery protocol end to end: a real DiscoveryServer (on its own event loop in a thread
of the test process) and real ``pilotfish proxy --discovery`` processes in front of real
upstreams, over loopback. Raw sockets speak the protocol where a test needs to control each
message."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from proxyutil import ROOT, Upstream, free_port, get_json, simple_config

from pilotfish.controlplane.discovery import AckEvent, DiscoveryServer, ProxyStatus
from pilotfish.proxy import model

TOKEN = "s3cret-bootstrap-token"


# --------------------------------------------------------------------------- helpers


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.03)


class Desired:
    """compute(node): the config the test wants for each pod name (a dict for simple_config's
    shape, or an exception to raise), with the node filled in as translate() would."""

    def __init__(self) -> None:
        self.by_name: dict[str, Any] = {}
        self.calls = 0

    def __call__(self, node: model.Node) -> model.ProxyConfig:
        self.calls += 1
        d = self.by_name[node.name]
        if isinstance(d, Exception):
            raise d
        return model.decode_config({**d, "node": msgspec.to_builtins(node)})


class ControlPlane:
    """A DiscoveryServer on its own event loop, in a thread; sync methods for the test."""

    def __init__(self, compute: Callable[[model.Node], model.ProxyConfig], port: int = 0, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.acks: list[AckEvent] = []
        self.server = DiscoveryServer(compute, TOKEN, on_ack=self.acks.append, **kw)
        self.port = self.run(self.server.start("127.0.0.1", port))
        self.stopped = False

    def run(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def f() -> Any:
            return fn(*args)
        return self.run(f())

    def statuses(self) -> list[ProxyStatus]:
        return self.call(self.server.statuses)

    def status(self, proxy_id: str) -> ProxyStatus | None:
        return next((s for s in self.statuses() if s.proxy_id == proxy_id), None)

    def push(self, reason: str = "test") -> None:
        self.server.request_push(reason)  # thread-safe by contract

    def wait_synced(self, timeout: float = 10.0) -> bool:
        return self.run(self.server.wait_synced(timeout), timeout + 5)

    def wait_state(self, proxy_id: str, state: str, timeout: float = 10.0) -> ProxyStatus:
        def check() -> ProxyStatus | None:
            s = self.status(proxy_id)
            return s if s is not None and s.connected and s.state == state else None
        return wait_until(check, timeout, f"{proxy_id} {state}: {self.status(proxy_id)}")

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class DiscoveredProxy:
    """``pilotfish proxy --discovery`` in its own process."""

    def __init__(self, tmp: Path, cp_port: int, name: str, ip: str, token_file: Path,
                 extra: tuple[str, ...] = ()) -> None:
        self.name = name
        self.id = f"sidecar~{ip}~{name}.default~default.svc.cluster.local"
        self.admin_port = free_port()
        self.log_path = tmp / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pilotfish", "proxy", "--discovery", f"127.0.0.1:{cp_port}",
             "--token-file", str(token_file), "--pod-name", name, "--namespace", "default",
             "--role", "sidecar", "--ip", ip, "--label", f"app={name}", "--label", "version=v1",
             "--service-account", f"sa-{name}", "--workload-port", "9080", "--app-port", "9080:8080",
             "--interception", "NONE", "--admin-port", str(self.admin_port),
             "--discovery-backoff-max", "0.4", *extra],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        )
        wait_until(lambda: self.ready_status() is not None, 10, f"{name}'s admin endpoint")

    def admin(self, path: str) -> tuple[int, Any]:
        status, _, body = get_json(self.admin_port, path)
        return status, body

    def ready_status(self) -> int | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"proxy exited: {self.log_path.read_text()}")
        try:
            return get_json(self.admin_port, "/ready")[0]
        except OSError:
            return None

    def discovery(self) -> dict:
        return self.admin("/discovery")[1]

    def version(self) -> str:
        return self.admin("/config_dump")[1]["version"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def upstream_of(port: int) -> str:
    status, headers, _ = get_json(port, "/anything")
    assert status == 200, status
    return headers["x-upstream"]


class RawClient:
    """The protocol by hand, over a plain socket."""

    def __init__(self, port: int, node: dict, token: str = TOKEN, version: str = "",
                 hash: str | None = None, hello: dict | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.send(hello if hello is not None else
                  {"type": "hello", "token": token, "node": node, "version": version, "hash": hash})

    def send(self, msg: dict) -> None:
        payload = json.dumps(msg).encode()
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def _exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def recv(self, timeout: float = 5.0) -> dict | None:
        """The next message, None at EOF; socket.timeout if nothing comes."""
        self.sock.settimeout(timeout)
        head = self._exact(4)
        if head is None:
            return None
        body = self._exact(struct.unpack(">I", head)[0])
        return None if body is None else json.loads(body)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def upstreams():
    a, b = Upstream("a"), Upstream("b")
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def cleanup():
    items: list[Any] = []
    yield items
    for it in reversed(items):
        it.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    return p


# --------------------------------------------------------------------------- proxies


def test_proxy_waits_for_its_first_snapshot_then_follows_pushes(tmp_path, upstreams, cleanup, token_file):
    a, b = upstreams
    cp_port, listen = free_port(), free_port()
    # the control plane is not up yet: the proxy runs its admin endpoint only, not ready
    px = DiscoveredProxy(tmp_path, cp_port, "p1", "10.0.0.1", token_file)
    cleanup.append(px)
    assert px.ready_status() == 503
    assert px.admin("/server_info")[1]["state"] == "PRE_INITIALIZING"
    d = wait_until(lambda: px.discovery().get("last_error") and px.discovery(), 5, "a connection error")
    assert d["connected"] is False and "cannot reach the control plane" in d["last_error"]

    desired = Desired()
    desired.by_name["p1"] = simple_config(listen, {"a": [a.port]})
    cp = ControlPlane(desired, port=cp_port)
    cleanup.append(cp)
    wait_until(lambda: px.ready_status() == 200, 10, "the proxy to become ready")
    assert upstream_of(listen) == "a"

    st = cp.wait_state(px.id, "SYNCED")
    v1 = st.sent_version
    assert st.acked_version == v1 and st.nack is None and st.compute_error is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/1", v1)  # 2026-11-25T19:40:00.123Z/1
    assert px.version() == v1
    # the node is what the command line said
    assert st.node.labels == {"app": "p1", "version": "v1"} and st.node.ips == ["10.0.0.1"]
    assert st.node.service_account == "sa-p1" and st.node.app_ports == {9080: 8080}
    assert st.node.interception == "NONE" and st.node.workload_ports == [9080] and st.node.role == "sidecar"
    sent = cp.call(cp.server.last_sent, px.id)
    assert sent.version == v1 and sent.clusters[0].name == "a"
    assert [e.proxy_id for e in cp.acks] == [px.id] and cp.acks[0].latency >= 0

    # a change: the proxy's traffic follows, under a new version
    desired.by_name["p1"] = simple_config(listen, {"b": [b.port]})
    cp.push("route to b")
    assert cp.wait_synced()
    assert upstream_of(listen) == "b"
    st = cp.status(px.id)
    v2 = st.sent_version
    assert st.state == "SYNCED" and v2 != v1 and st.acked_version == v2 and px.version() == v2
    assert cp.call(cp.server.last_sent, px.id).clusters[0].name == "b"
    assert cp.acks[-1].version == v2 and cp.acks[-1].since_request >= cp.acks[-1].latency

    # a push that changes nothing sends nothing
    sent_before, received_before = cp.server.snapshots_sent, px.discovery()["snapshots_received"]
    cp.push("no-op")
    time.sleep(0.3)
    assert cp.wait_synced()
    assert cp.server.snapshots_sent == sent_before
    assert px.discovery()["snapshots_received"] == received_before
    assert cp.status(px.id).sent_version == v2


def test_nack_keeps_the_previous_snapshot_and_others_move_on(tmp_path, upstreams, cleanup, token_file):
    a, b = upstreams
    desired = Desired()
    l1, l2 = free_port(), free_port()
    desired.by_name["p1"] = simple_config(l1, {"a": [a.port]})
    desired.by_name["p2"] = simple_config(l2, {"a": [a.port]})
    cp = ControlPlane(desired)
    cleanup.append(cp)
    p1 = DiscoveredProxy(tmp_path, cp.port, "p1", "10.0.0.1", token_file)
    cleanup.append(p1)
    p2 = DiscoveredProxy(tmp_path, cp.port, "p2", "10.0.0.2", token_file)
    cleanup.append(p2)
    wait_until(lambda: len(cp.statuses()) == 2, 10, "two proxies")
    assert cp.wait_synced()
    v1 = cp.status(p1.id).sent_version

    # p1's next snapshot binds a port someone else holds: p1 rejects it, p2 applies its own
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        bad = simple_config(l1, {"b": [b.port]})
        bad["listeners"].append({"name": "busy", "address": "127.0.0.1", "port": busy.getsockname()[1],
                                 "default_filter_chain": {"http": {"route_config": str(l1)}}})
        desired.by_name["p1"] = bad
        desired.by_name["p2"] = simple_config(l2, {"b": [b.port]})
        cp.push("break p1")
        st = cp.wait_state(p1.id, "NACKED")
        assert "cannot bind" in st.nack and st.nack_version == st.sent_version != v1
        assert st.acked_version == v1
        assert cp.wait_state(p2.id, "SYNCED").sent_version == st.sent_version
        assert upstream_of(l1) == "a"  # p1 keeps serving its previous snapshot
        assert upstream_of(l2) == "b"
        assert p1.version() == v1
        d = p1.discovery()
        assert d["last_nack"]["version"] == st.sent_version and "cannot bind" in d["last_nack"]["error"]
        assert p1.admin("/config_dump")[1]["last_rejected"]["version"] == st.sent_version
        assert not cp.wait_synced(0.3)

        # compute fails for p1: p2 still gets its change, p1 keeps what it has
        desired.by_name["p1"] = RuntimeError("registry exploded")
        desired.by_name["p2"] = simple_config(l2, {"a": [a.port]})
        sent_before = cp.server.snapshots_sent
        cp.push("p1's compute fails")
        wait_until(lambda: upstream_of(l2) == "a", 10, "p2 to route to a")
        st = wait_until(lambda: (s := cp.status(p1.id)).compute_error and s, 5, "p1's compute error")
        assert "registry exploded" in st.compute_error and st.state == "NACKED"
        assert cp.server.snapshots_sent == sent_before + 1
        assert upstream_of(l1) == "a"
    finally:
        busy.close()

    # fixed: p1 syncs again
    desired.by_name["p1"] = simple_config(l1, {"b": [b.port]})
    cp.push("fix p1")
    assert cp.wait_synced()
    st = cp.status(p1.id)
    assert st.state == "SYNCED" and st.nack is None and st.compute_error is None
    assert upstream_of(l1) == "b" and p1.version() == st.sent_version


def test_bad_token_and_bad_hellos_are_refused(tmp_path, upstreams, cleanup):
    desired = Desired()
    desired.by_name["p1"] = simple_config(free_port(), {"a": [upstreams[0].port]})
    cp = ControlPlane(desired)
    cleanup.append(cp)
    node = {"id": "raw~1", "name": "p1"}

    c = RawClient(cp.port, node, token="wrong")
    assert c.recv() == {"type": "error", "error": "authentication failed: bad token"}
    assert c.recv() is None  # closed
    c.close()
    c = RawClient(cp.port, node, hello={"type": "ack", "version": "x"})
    assert "expected a hello" in c.recv()["error"] and c.recv() is None
    c.close()
    c = RawClient(cp.port, node, hello={"type": "hello", "token": TOKEN, "node": {"role": "nope"}})
    assert "invalid node" in c.recv()["error"] and c.recv() is None
    c.close()
    c = RawClient(cp.port, node, hello={"type": "hello", "token": TOKEN, "node": node, "protocol": 2})
    assert "unsupported protocol version 2" in c.recv()["error"] and c.recv() is None
    c.close()
    c = socket.create_connection(("127.0.0.1", cp.port))
    c.sendall(struct.pack(">I", 1 << 30))  # over the size limit
    c.settimeout(5)
    assert c.recv(100) == b""
    c.close()

    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token")
    px = DiscoveredProxy(tmp_path, cp.port, "p1", "10.0.0.1", bad)
    cleanup.append(px)
    d = wait_until(lambda: (d := px.discovery())["last_error"] and d, 5, "the refusal")
    assert "authentication failed" in d["last_error"] and d["connected"] is False
    assert px.ready_status() == 503
    assert cp.statuses() == [] and desired.calls == 0


def test_control_plane_restart(tmp_path, upstreams, cleanup, token_file):
    a, b = upstreams
    desired = Desired()
    listen = free_port()
    desired.by_name["p1"] = simple_config(listen, {"a": [a.port]})
    cp1 = ControlPlane(desired)
    cleanup.append(cp1)
    port = cp1.port
    px = DiscoveredProxy(tmp_path, port, "p1", "10.0.0.1", token_file)
    cleanup.append(px)
    v1 = cp1.wait_state(px.id, "SYNCED").sent_version

    # the control plane dies: traffic flows on the last good snapshot
    cp1.stop()
    wait_until(lambda: not px.discovery()["connected"], 5, "the proxy to notice")
    for _ in range(5):
        assert upstream_of(listen) == "a"
    assert px.ready_status() == 200

    # it comes back with the same view: the proxy reconnects and is not sent it again
    cp2 = ControlPlane(desired, port=port)
    cleanup.append(cp2)
    st = cp2.wait_state(px.id, "SYNCED")
    assert st.sent_version == st.acked_version == v1
    assert cp2.server.snapshots_sent == 0 and cp2.call(cp2.server.last_sent, px.id).version == v1
    d = px.discovery()
    assert d["connected"] and d["sessions"] == 2 and d["snapshots_received"] == 1
    cp2.stop()

    # it comes back with a changed view: the proxy gets it on reconnection
    desired.by_name["p1"] = simple_config(listen, {"b": [b.port]})
    cp3 = ControlPlane(desired, port=port)
    cleanup.append(cp3)
    st = cp3.wait_state(px.id, "SYNCED")
    assert st.sent_version != v1
    assert upstream_of(listen) == "b" and px.version() == st.sent_version


def test_bootstrap_config_serves_until_the_control_plane_answers(tmp_path, upstreams, cleanup, token_file):
    a, b = upstreams
    listen = free_port()
    boot = simple_config(listen, {"a": [a.port]}, version="bootstrap")
    boot["access_log"] = {"enabled": False}
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(boot))
    cp_port = free_port()
    px = DiscoveredProxy(tmp_path, cp_port, "p1", "10.0.0.1", token_file, ("--config", str(path)))
    cleanup.append(px)
    assert px.ready_status() == 200  # ready on the bootstrap snapshot
    assert upstream_of(listen) == "a" and px.version() == "bootstrap"

    desired = Desired()
    desired.by_name["p1"] = simple_config(listen, {"b": [b.port]})
    cp = ControlPlane(desired, port=cp_port)
    cleanup.append(cp)
    st = cp.wait_state(px.id, "SYNCED")
    assert upstream_of(listen) == "b" and px.version() == st.sent_version


def test_command_line_errors(tmp_path):
    def run(*args: str) -> tuple[int, str]:
        p = subprocess.run([sys.executable, "-m", "pilotfish", "proxy", *args], cwd=str(ROOT),
                           capture_output=True, text=True, timeout=20)
        return p.returncode, p.stderr

    rc, err = run()
    assert rc == 2 and "--config FILE, --discovery HOST:PORT" in err
    rc, err = run("--discovery", "127.0.0.1:1")
    assert rc == 2 and "needs a token" in err
    rc, err = run("--discovery", "127.0.0.1:notaport", "--token", "t")
    assert rc == 2 and "bad port" in err
    rc, err = run("--discovery", "127.0.0.1:1", "--token", "t", "--label", "novalue")
    assert rc == 2 and "KEY=VALUE" in err
    rc, err = run("--discovery", "127.0.0.1:1", "--token", "t", "--token-file", "x")
    assert rc == 2 and "not allowed with" in err


# --------------------------------------------------------------------------- protocol


def test_protocol_states_versions_and_reconnection(upstreams, cleanup):
    desired = Desired()
    desired.by_name["raw"] = simple_config(free_port(), {"a": [upstreams[0].port]})
    cp = ControlPlane(desired)
    cleanup.append(cp)
    node = {"id": "raw~10.0.0.9~raw.default~default.svc.cluster.local", "name": "raw"}

    c = RawClient(cp.port, node)
    assert c.recv()["type"] == "welcome"
    snap = c.recv()
    assert snap["type"] == "snapshot" and snap["config"]["clusters"][0]["name"] == "a"
    v1, h1 = snap["version"], snap["hash"]
    assert cp.wait_state(node["id"], "STALE").sent_version == v1  # sent, not yet answered
    assert not cp.wait_synced(0.2)
    c.send({"type": "ack", "version": v1})
    assert cp.wait_synced()
    assert cp.status(node["id"]).state == "SYNCED"

    # a second connection with the same id replaces the first
    c2 = RawClient(cp.port, node, version=v1, hash=h1)
    assert c2.recv()["type"] == "welcome"
    assert c.recv() is None
    c.close()
    with pytest.raises(TimeoutError):  # it holds this content: nothing to send
        c2.recv(timeout=0.3)
    st = cp.wait_state(node["id"], "SYNCED")
    assert st.sent_version == st.acked_version == v1
    c2.close()
    wait_until(lambda: not cp.status(node["id"]).connected, 5, "the disconnection")
    assert cp.status(node["id"]).disconnected_at is not None

    # holding something else (say, a local push), it is sent the same content, same version
    c3 = RawClient(cp.port, node, version="local", hash="0" * 32)
    assert c3.recv()["type"] == "welcome"
    again = c3.recv()
    assert (again["version"], again["hash"]) == (v1, h1)
    c3.send({"type": "nack", "version": v1, "error": "no thanks"})
    st = cp.wait_state(node["id"], "NACKED")
    assert st.nack == "no thanks" and st.acked_version == "local"

    # a change: a new version; the NACK no longer stands
    desired.by_name["raw"] = simple_config(free_port(), {"b": [upstreams[1].port]})
    cp.push("change")
    snap = c3.recv()
    assert snap["version"] != v1 and snap["hash"] != h1
    st = cp.status(node["id"])
    assert st.state == "STALE" and st.nack is None
    c3.send({"type": "ack", "version": snap["version"]})
    assert cp.wait_synced()
    c3.close()


def test_pushes_are_debounced(upstreams, cleanup):
    desired = Desired()
    desired.by_name["raw"] = simple_config(free_port(), {"a": [upstreams[0].port]})
    cp = ControlPlane(desired, debounce=0.1, max_debounce=0.5)
    cleanup.append(cp)
    c = RawClient(cp.port, {"id": "raw~1", "name": "raw"})
    assert c.recv()["type"] == "welcome" and c.recv()["type"] == "snapshot"
    assert desired.calls == 1

    for i in range(20):  # a burst: one recompute
        cp.push(f"burst {i}")
    time.sleep(0.4)
    assert cp.wait_synced(0) is False  # not acked yet (connected, sent, STALE)
    assert desired.calls == 2 and cp.server.pushes == 1
    assert cp.server.last_push["reasons"][:2] == ["burst 0", "burst 1"]

    # a steady stream never goes quiet: max_debounce still pushes every 0.5 s
    end = time.monotonic() + 1.3
    while time.monotonic() < end:
        cp.push("stream")
        time.sleep(0.05)
    pushes_during = cp.server.pushes - 1
    time.sleep(0.3)
    assert 2 <= pushes_during <= 3, pushes_during
    assert cp.server.pushes - 1 <= pushes_during + 1
    c.close()


def test_raw_client_gets_deltas_and_a_resync_sends_the_version_whole(upstreams, cleanup):
    desired = Desired()
    port = free_port()
    desired.by_name["raw"] = simple_config(port, {"a": [upstreams[0].port], "b": [upstreams[1].port]})
    cp = ControlPlane(desired)
    cleanup.append(cp)
    node = {"id": "raw~10.0.0.7~raw.default~default.svc.cluster.local", "name": "raw"}
    c = RawClient(cp.port, node, hello={"type": "hello", "token": "s3cret-bootstrap-token", "node": node,
                                         "version": "", "hash": None, "delta": True})
    assert c.recv()["type"] == "welcome"
    snap = c.recv()
    assert snap["type"] == "snapshot" and set(snap["digests"]) == {"listeners", "routes", "clusters", "endpoints"}
    c.send({"type": "ack", "version": snap["version"]})
    assert cp.wait_synced()

    desired.by_name["raw"] = simple_config(port, {"a": [upstreams[0].port], "b": [upstreams[0].port]})
    cp.push("change")
    d = c.recv()
    assert d["type"] == "delta" and d["base"] == snap["hash"] and d["hash"] != snap["hash"]
    # only b's endpoints changed
    assert list(d["new"]) == ["endpoints"] and len(d["new"]["endpoints"]) == 1
    assert "clusters" not in d["config"] and d["config"]["version"] == ""
    c.send({"type": "nack", "version": d["version"], "error": "lost my elements", "resync": True})
    again = c.recv()
    assert again["type"] == "snapshot" and (again["version"], again["hash"]) == (d["version"], d["hash"])
    st = cp.status(node["id"])
    assert st.state == "STALE" and st.nack is None  # a resync is not a rejection
    c.send({"type": "ack", "version": again["version"]})
    assert cp.wait_synced() and cp.server.resyncs == 1 and cp.server.deltas_sent == 1
    c.close()


def test_a_proxy_follows_pushes_through_deltas(tmp_path, upstreams, cleanup, token_file):
    desired = Desired()
    port = free_port()
    desired.by_name["p"] = simple_config(port, {"a": [upstreams[0].port]})
    cp = ControlPlane(desired)
    cleanup.append(cp)
    px = DiscoveredProxy(tmp_path, cp.port, "p", "10.1.0.5", token_file)
    cleanup.append(px)
    wait_until(lambda: px.ready_status() == 200, 10, "the proxy ready")
    assert upstream_of(port) == "a"
    for i, target in enumerate(["b", "a", "b"]):
        desired.by_name["p"] = simple_config(port, {target: [upstreams["ab".index(target)].port]})
        cp.push(f"change {i}")
        assert cp.wait_synced()
        assert upstream_of(port) == target
    state = px.discovery()
    assert state["deltas"] == 3 and state["resyncs"] == 0 and state["nacked"] == 0
    sent = cp.call(cp.server.last_sent, px.id)
    dump = px.admin("/config_dump")[1]
    assert dump["version"] == sent.version
    assert {k: v for k, v in dump["config"].items() if k not in ("version", "node")} == {
        k: v for k, v in msgspec.to_builtins(sent).items() if k not in ("version", "node")}


def test_snapshot_encoder_bytes_equal_plain_encoding():
    """Shared elements are encoded once, yet each message is byte for byte the plain encoding,
    and the content hash follows content only."""
    import copy as _copy
    import json as _json
    import random as _random

    import msgspec

    from pilotfish.controlplane.discovery import SnapshotEncoder
    from pilotfish.proxy import model

    def cluster(i: int) -> model.Cluster:
        return model.Cluster(name=f"outbound|80||svc{i}.ns.svc.cluster.local", type="STATIC")

    shared = [cluster(i) for i in range(40)]
    rng = _random.Random(7)
    enc = SnapshotEncoder()
    hashes: dict[str, str] = {}
    for trial in range(60):
        own = [model.Cluster(name=f"inbound|{8000 + trial}||", type="STATIC")]
        clusters = list(shared)
        at = rng.randrange(len(clusters) + 1)
        clusters[at:at] = own
        if trial % 7 == 0:
            del clusters[rng.randrange(len(clusters))]
        cfg = model.ProxyConfig(version="v", clusters=clusters,
                                endpoints=[model.ClusterEndpoints(cluster=c.name) for c in clusters[:3]])
        prepared = enc.prepare(cfg)
        msg = bytes(prepared.message("42"))
        body = _json.loads(msg[4:])
        plain = _copy.copy(cfg)
        plain.version = ""
        assert msg.endswith(b'"config":' + msgspec.json.encode(plain) + b"}")  # the very bytes
        assert body["version"] == "42" and body["hash"] == prepared.hash
        # the same content (fresh objects) gives the same hash; different content another
        again = SnapshotEncoder().prepare(msgspec.convert(msgspec.to_builtins(cfg), model.ProxyConfig))
        assert again.hash == prepared.hash
        key = msgspec.json.encode(plain).decode()
        assert hashes.setdefault(key, prepared.hash) == prepared.hash
    assert len(set(hashes.values())) == len(hashes)
