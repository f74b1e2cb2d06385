"""Pod networking for real: a bridge and network namespaces of our own, Istio's interception
rules, ClusterIP DNAT, /etc/hosts, teardown and crash recovery.

Needs root (network namespaces, iptables); skipped with the reason otherwise. Every test
makes its own bridge, name prefix and CIDRs, so parallel runs do not clash."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from pilotfish.runtime import network as netmod
from pilotfish.runtime.network import NetworkError, PodNetwork, cleanup_stale, render_rules

needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and iptables"),
    pytest.mark.skipif(not shutil.which("iptables") or not shutil.which("ip") or not shutil.which("setpriv"),
                       reason="needs iproute2, iptables and util-linux (setpriv)"),
]

# Serves on the given ports; each connection gets one line: "<tag> <original destination> <peer>"
# (the tag says which port took the connection; the original destination is "-" where the
# namespace has no connection tracking)
CAPTURE = textwrap.dedent("""\
    import socket, struct, sys, threading
    def listen(port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        return s
    def serve(s, tag):
        while True:
            c, peer = s.accept()
            try:
                p, ip = struct.unpack("!2xH4s8x", c.getsockopt(socket.SOL_IP, 80, 16))
                dst = f"{socket.inet_ntoa(ip)}:{p}"
            except OSError:
                dst = "-"
            c.sendall(f"{tag} {dst} {peer[0]}\\n".encode())
            c.close()
    for arg in sys.argv[1:]:
        port, tag = arg.split("=")
        threading.Thread(target=serve, args=(listen(int(port)), tag), daemon=True).start()
    print("ready", flush=True)  # every port listens by now
    threading.Event().wait()
""")

CLIENT = ("import socket,sys\n"
          "try:\n"
          "    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),3)\n"
          "    print(s.recv(200).decode().strip())\n"
          "except OSError as e:\n"
          "    print('error', type(e).__name__)\n")


def unique_network(state_dir: Path, **kw) -> PodNetwork:
    """A PodNetwork with names and CIDRs no other run uses."""
    tag = uuid.uuid4().hex[:4]
    last: Exception | None = None
    for _ in range(20):
        a, b = random.randrange(200, 250), random.randrange(0, 256)
        n = PodNetwork(state_dir, pod_cidr=f"10.{a}.{b}.0/24", bridge=f"pft{tag}", prefix=f"t{tag}",
                       service_cidr=f"172.31.{b}.0/24", **kw)
        try:
            n.setup()
            return n
        except NetworkError as e:  # a CIDR already routed here: try another
            last = e
    raise AssertionError(f"no free CIDR: {last}")


class Procs:
    """Background processes started in pods, killed at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        self.procs.append(p)
        line = p.stdout.readline()
        assert "ready" in line, line
        return p

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            p.stdout.close()


@pytest.fixture
def net(tmp_path):
    n = unique_network(tmp_path / "state")
    procs = Procs()
    n.procs = procs  # type: ignore[attr-defined]
    try:
        yield n
    finally:
        procs.close()
        n.teardown()


def capture(n: PodNetwork, key: str, _tmp: Path, *ports: str, uid: int | None = None) -> None:
    n.procs.start(n.exec_argv(key, [sys.executable, "-c", CAPTURE, *ports], uid=uid))  # type: ignore[attr-defined]


def connect(n: PodNetwork, key: str, host: str, port: int, uid: int | None = None) -> str:
    r = subprocess.run(n.exec_argv(key, [sys.executable, "-c", CLIENT, host, str(port)], uid=uid),
                       capture_output=True, text=True, timeout=20)
    return r.stdout.strip() or r.stderr.strip()


# --------------------------------------------------------------------------- without root


def test_rules_render_istio_chains():
    spec = {"proxy_uid": 1337, "inbound_ports": [9080, 15021], "exclude_inbound_ports": [15021],
            "exclude_outbound_ports": [3306], "exclude_outbound_cidrs": ["10.0.0.0/8"]}
    text = render_rules(spec, [["10.96.0.5", 80, [["10.244.0.7", 8080], ["10.244.0.8", 8080]]], ["10.96.0.6", 80, []]])
    lines = text.splitlines()
    assert "-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT" in lines
    assert not any("--dport 15021 -j ISTIO_IN_REDIRECT" in ln for ln in lines)  # excluded wins
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in lines
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in lines
    out = [ln for ln in lines if ln.startswith("-A ISTIO_OUTPUT")]
    assert out[-1] == "-A ISTIO_OUTPUT -j ISTIO_REDIRECT"
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in out
    assert "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN" in out
    assert "-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN" in out
    assert "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN" in out
    # two endpoints: the first taken with probability 1/2, the second otherwise
    stat = [ln for ln in lines if "statistic" in ln]
    assert len(stat) == 1 and "--probability 0.50000000000" in stat[0]
    assert any("DNAT --to-destination 10.244.0.8:8080" in ln for ln in lines)
    assert any(ln.endswith("-d 10.96.0.6/32 -p tcp --dport 80 -j REJECT --reject-with tcp-reset") for ln in lines)
    # no interception, no services: empty tables
    assert render_rules(None, []) == "*nat\nCOMMIT\n*filter\nCOMMIT\n"


def test_bad_arguments():
    with pytest.raises(ValueError, match="bridge"):
        PodNetwork("/nonexistent", bridge="a-much-too-long-bridge-name")
    with pytest.raises(ValueError, match="prefix"):
        PodNetwork("/nonexistent", prefix="toolong7")
    with pytest.raises(ValueError, match="overlaps"):
        PodNetwork("/nonexistent", pod_cidr="10.0.0.0/8", service_cidr="10.96.0.0/16")


# --------------------------------------------------------------------------- with root


def test_available():
    if os.geteuid() != 0:
        ok, why = netmod.available()
        assert not ok and "root" in why
    else:
        assert netmod.available() == (True, "")


class TestWithRoot:
    pytestmark = needs_root

    def test_pods_talk_over_the_bridge(self, net, tmp_path):
        a, b = net.add_pod("default/a"), net.add_pod("default/b")
        assert a.ip != b.ip and a.netns != b.netns
        assert a.netns.startswith(net.prefix + "-") and a.gateway == net.gateway
        capture(net, "default/b", tmp_path, "7000=b")
        assert connect(net, "default/a", b.ip, 7000) == f"b - {a.ip}"  # pod IP to pod IP, no NAT
        # the host reaches pods on the bridge; a pod has no default route
        assert connect_host(b.ip, 7000).startswith("b - ")
        routes = subprocess.run(["ip", "-n", a.netns, "route"], capture_output=True, text=True).stdout
        assert "default" not in routes and str(net.service_cidr) in routes
        # the record: a restart will not hand out a live address again
        assert net.pod("default/a").ip == a.ip
        c = net.add_pod("default/c")
        assert c.ip not in (a.ip, b.ip)
        net.remove_pod("default/a")
        assert not Path("/run/netns", a.netns).exists()
        assert net.add_pod("default/d").ip not in (b.ip, c.ip, a.ip)  # round robin: not reused at once
        with pytest.raises(NetworkError, match="already"):
            net.add_pod("default/b")

    def test_hosts_file(self, net):
        a = net.add_pod("default/a")
        net.write_hosts("default/a", {"reviews": "172.31.9.12", "reviews.default": "172.31.9.12",
                                      "reviews.default.svc.cluster.local": "172.31.9.12",
                                      "10.1.2.3": "ratings ratings.default"})
        out = subprocess.run(net.exec_argv("default/a", ["getent", "hosts", "reviews.default.svc.cluster.local"],
                                           uid=1337), capture_output=True, text=True).stdout
        assert out.split() == ["172.31.9.12", "reviews", "reviews.default", "reviews.default.svc.cluster.local"]
        out = subprocess.run(net.exec_argv("default/a", ["getent", "hosts", "ratings"]), capture_output=True, text=True).stdout
        assert out.split()[0] == "10.1.2.3"
        assert subprocess.run(net.exec_argv("default/a", ["getent", "hosts", "localhost"]),
                              capture_output=True, text=True).returncode == 0
        assert "reviews" not in Path("/etc/hosts").read_text()
        # rewritten in place: a process already running sees the change
        net.write_hosts("default/a", {"reviews": "172.31.9.99"})
        assert Path(f"/etc/netns/{a.netns}/hosts").read_text().count("reviews") == 1

    def test_interception(self, net, tmp_path):
        a, b = net.add_pod("default/a"), net.add_pod("default/b")
        net.intercept("default/a")
        # the "sidecar": uid 1337 listening on 15001 and 15006; an app port and an excluded port
        capture(net, "default/a", tmp_path, "15001=outbound", "15006=inbound", "15021=health", "8080=app",
                uid=1337)
        capture(net, "default/b", tmp_path, "7000=b")
        # outbound from the app: to the sidecar, with the original destination kept
        assert connect(net, "default/a", b.ip, 7000) == f"outbound {b.ip}:7000 {a.ip}"
        # a ClusterIP (routed into the bridge) is caught the same way
        vip = str(net.service_cidr.network_address + 10)
        assert connect(net, "default/a", vip, 80) == f"outbound {vip}:80 {a.ip}"
        # the sidecar's own traffic (uid 1337) goes out untouched
        assert connect(net, "default/a", b.ip, 7000, uid=1337) == f"b - {a.ip}"
        # loopback to loopback is not redirected
        assert connect(net, "default/a", "127.0.0.1", 8080) == "app 127.0.0.1:8080 127.0.0.1"
        # inbound: to 15006 with the original destination; excluded ports are not redirected
        assert connect(net, "default/b", a.ip, 8080) == f"inbound {a.ip}:8080 {b.ip}"
        assert connect(net, "default/b", a.ip, 15021) == f"health {a.ip}:15021 {b.ip}"
        # called again: the rules are replaced (only 8080 captured inbound, port 7000 excluded outbound)
        net.intercept("default/a", inbound_ports=[8080], exclude_outbound_ports=[7000])
        assert connect(net, "default/a", b.ip, 7000) == f"b - {a.ip}"
        assert connect(net, "default/b", a.ip, 8080) == f"inbound {a.ip}:8080 {b.ip}"
        assert connect(net, "default/b", a.ip, 15001) == f"outbound {a.ip}:15001 {b.ip}"  # not captured now
        rules = subprocess.run(["ip", "netns", "exec", a.netns, "iptables-save", "-t", "nat"],
                               capture_output=True, text=True).stdout
        assert rules.count("-A OUTPUT -p tcp -j ISTIO_OUTPUT") == 1

    def test_service_dnat(self, net, tmp_path):
        a, b, c = (net.add_pod(f"default/{x}") for x in "abc")
        capture(net, "default/b", tmp_path, "7000=b")
        capture(net, "default/c", tmp_path, "7000=c")
        vip, empty = str(net.service_cidr.network_address + 10), str(net.service_cidr.network_address + 11)
        net.service_dnat("default/a", [(vip, 80, [(b.ip, 7000), (c.ip, 7000)]), (empty, 80, [])])
        seen = {connect(net, "default/a", vip, 80).split()[0] for _ in range(16)}
        assert seen == {"b", "c"}  # both endpoints (a miss has probability 2**-15)
        t0 = time.monotonic()
        assert connect(net, "default/a", empty, 80) == "error ConnectionRefusedError"  # rejected at once
        assert time.monotonic() - t0 < 2
        # replaced idempotently: only c now, and no chain of the old rules remains
        net.service_dnat("default/a", [(vip, 80, [(c.ip, 7000)])])
        assert {connect(net, "default/a", vip, 80).split()[0] for _ in range(4)} == {"c"}
        rules = subprocess.run(["ip", "netns", "exec", a.netns, "iptables-save"], capture_output=True, text=True).stdout
        assert rules.count("DNAT") == 1 and "REJECT" not in rules
        net.service_dnat("default/a", [])
        rules = subprocess.run(["ip", "netns", "exec", a.netns, "iptables-save"], capture_output=True, text=True).stdout
        assert "PF-" not in rules

    def test_exec_argv_and_netns_socket(self, net, tmp_path):
        a = net.add_pod("default/a")
        out = subprocess.run(net.exec_argv("default/a", ["id", "-u"], uid=1337), capture_output=True, text=True).stdout
        assert out.strip() == "1337"
        capture(net, "default/a", tmp_path, "15000=admin")
        s = net.socket("default/a")  # made in the pod: its 127.0.0.1 is the pod's
        try:
            s.settimeout(3)
            s.connect(("127.0.0.1", 15000))
            assert s.recv(100).decode().startswith("admin")
        finally:
            s.close()
        assert a.ip

    def test_teardown_leaves_nothing(self, tmp_path):
        before = host_snapshot()
        n = unique_network(tmp_path / "state")
        for k in ("ns1/a", "ns1/b"):
            n.add_pod(k)
        n.intercept("ns1/a")
        n.service_dnat("ns1/b", [(str(n.service_cidr.network_address + 5), 80, [(n.pod("ns1/a").ip, 80)])])
        n.write_hosts("ns1/a", {"x": "10.1.1.1"})
        pods = n.pods()
        assert mine(n, host_snapshot())  # they exist
        removed = n.teardown()
        assert f"bridge {n.bridge}" in removed and all(f"netns {p.netns}" in removed for p in pods)
        after = host_snapshot()
        assert not mine(n, after)
        assert host_rules(after, n) == host_rules(before, n)
        assert after["ip_forward"] == before["ip_forward"]
        assert not any(Path("/etc/netns", p.netns).exists() for p in pods)
        assert not (tmp_path / "state" / "network.json").exists()
        assert n.teardown() == []  # twice is fine

    def test_fence_when_the_host_forwards(self, tmp_path):
        """What a host that forwards IPv4 gets (forced here: the test does not touch sysctls):
        nothing routed into or out of the bridge, the service CIDR blackholed, bridged pod
        traffic still accepted; all of it gone after teardown."""
        before = host_snapshot()
        n = unique_network(tmp_path / "state", fence=True)
        procs = Procs()
        try:
            a, b = n.add_pod("default/a"), n.add_pod("default/b")
            rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
            chain = f"PF-FWD-{n.bridge}"
            assert f"-A FORWARD -i {n.bridge} -j {chain}" in rules and f"-A FORWARD -o {n.bridge} -j {chain}" in rules
            assert f"-A {chain} -i {n.bridge} -o {n.bridge} -j ACCEPT" in rules and f"-A {chain} -j DROP" in rules
            routes = subprocess.run(["ip", "route", "show", "type", "blackhole"], capture_output=True, text=True).stdout
            assert str(n.service_cidr) in routes
            n.procs = procs  # type: ignore[attr-defined]
            capture(n, "default/b", tmp_path, "7000=b")
            assert connect(n, "default/a", b.ip, 7000) == f"b - {a.ip}"
        finally:
            procs.close()
            removed = n.teardown()
        assert any(x.startswith("iptables chain filter/PF-FWD-") for x in removed)
        after = host_snapshot()
        assert host_rules(after, n) == host_rules(before, n) and not mine(n, after)

    def test_cleanup_stale_after_crash(self, tmp_path):
        state = tmp_path / "state"
        tag = uuid.uuid4().hex[:4]
        code = textwrap.dedent(f"""\
            import os, random, signal, subprocess, sys
            from pilotfish.runtime.network import PodNetwork, NetworkError
            for _ in range(20):
                b = random.randrange(256)
                n = PodNetwork({str(state)!r}, pod_cidr=f"10.{{random.randrange(200, 250)}}.{{b}}.0/24",
                               bridge="pfc{tag}", prefix="c{tag}", service_cidr=f"172.30.{{b}}.0/24")
                try:
                    n.setup()
                    break
                except NetworkError:
                    pass
            n.add_pod("default/a")
            n.add_pod("default/b")
            n.intercept("default/a")
            p = subprocess.Popen(n.exec_argv("default/a", ["sleep", "300"]), start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(p.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # crash: no teardown
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert r.returncode == -signal.SIGKILL, r.stderr
        orphan = int(r.stdout.split()[0])
        names = [ln for ln in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
                 if ln.startswith(f"c{tag}-")]
        try:
            assert len(names) == 2 and Path(f"/sys/class/net/pfc{tag}").exists()
            # a live owner is refused
            live = unique_network(tmp_path / "other")
            try:
                with pytest.raises(NetworkError, match="in use"):
                    cleanup_stale(tmp_path / "other")
            finally:
                live.teardown()
            removed = cleanup_stale(state)
            assert f"bridge pfc{tag}" in removed and sum(x.startswith("netns ") for x in removed) == 2
            assert not Path(f"/sys/class/net/pfc{tag}").exists()
            assert not [ln for ln in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                    text=True).stdout.splitlines() if ln.startswith(f"c{tag}-")]
            for _ in range(50):  # the process left running in the pod was killed
                if not Path(f"/proc/{orphan}").exists() or "Z" in _proc_state(orphan):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the orphan still runs")
            assert cleanup_stale(state) == []
        finally:
            for nm in names:
                subprocess.run(["ip", "netns", "del", nm.split()[0]], capture_output=True)
            subprocess.run(["ip", "link", "del", f"pfc{tag}"], capture_output=True)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def connect_host(host: str, port: int) -> str:
    r = subprocess.run([sys.executable, "-c", CLIENT, host, str(port)], capture_output=True, text=True, timeout=20)
    return r.stdout.strip()


def host_snapshot() -> dict:
    def run(*a: str) -> str:
        return subprocess.run(a, capture_output=True, text=True).stdout
    return {
        "netns": run("ip", "netns", "list"),
        "links": run("ip", "-o", "link"),
        "routes": run("ip", "route", "show", "table", "all"),
        "iptables": [ln for ln in run("iptables-save").splitlines() if not ln.startswith("#")],
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


def host_rules(snap: dict, n: PodNetwork) -> list[str]:
    """The host's iptables rules and user chains, without those of other pilotfish networks
    (parallel runs add theirs while this one runs; base chains come and go with them)."""
    return [ln for ln in snap["iptables"] if (ln.startswith("-A") or (ln.startswith(":") and "[" in ln
            and ln.split()[1] == "-")) and ("PF-FWD-" not in ln or n.bridge in ln)]


def mine(n: PodNetwork, snap: dict) -> list[str]:
    """Lines of a snapshot that name something of ``n``."""
    keys = (n.bridge, f"{n.prefix}-", f"{n.prefix}v", str(n.pod_cidr), str(n.service_cidr))
    lines = [*snap["netns"].splitlines(), *snap["links"].splitlines(), *snap["routes"].splitlines(), *snap["iptables"]]
    return [ln for ln in lines if any(k in ln for k in keys)]
