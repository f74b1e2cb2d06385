#!/usr/bin/env python3
"""Where a proxied request's time goes: the proxy's own Python work, hot and in situ.

    .venv/bin/python bench/hotpath.py               # about 1.5 minutes
    .venv/bin/python bench/hotpath.py --profile     # also a cProfile table of the hot path

1. **Hot**: the proxy's request processing with no I/O at all. A real ``Proxy`` (the bench's
   sidecar config) gets a client connection and a pooled upstream connection on fake
   transports; each iteration feeds a request head to the client side and a 1 KiB response
   to the upstream side, which runs everything a request runs (parsing, routing, headers,
   the upstream request, the response head, stats, access log, metrics) except the system
   calls. Best of 7 x 5000 iterations, in microseconds; also split into request and response
   side.
2. **In situ**, at 1000 rps over 4 connections (``bench/loadgen.c``, as bench/proxy.py), one
   process each in front of the same nginx upstream:
   - ``relay``: a bare uvloop TCP relay (one upstream connection per client connection, bytes
     passed through, no HTTP work): the floor of this design (event loop plus kernel);
   - ``relay+work``: the same relay also running the hot path's processing once per request
     (on its fake transports, so it adds CPU work and touches the same code and data);
   - ``pilotfish``: the real proxy; and ``nginx``: one nginx worker.
   The CPU the processing costs in situ is ``cpu(relay+work) - cpu(relay)``, against its hot
   cost from 1: their ratio is what cache misses (other processes run between requests) do
   to it. If ``relay+work`` is as slow as ``pilotfish``, the proxy's time is its Python work,
   not its I/O.

The last line printed is one JSON object. Like bench/proxy.py it needs nginx (the upstream
and the C peer) and gcc (the load generator), installed from Debian when run as root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import proxy as bench  # noqa: E402 - bench/proxy.py: processes, nginx, the load generator

BODY = b"a" * 1024
RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 21:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n\r\n" + BODY)
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: loadgen\r\nAccept: */*\r\n\r\n"


class _Transport:
    """A transport that accepts writes and drops them."""

    def __init__(self, peer: tuple[str, int], local: tuple[str, int]) -> None:
        self.peer, self.local, self.writes = peer, local, 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": self.peer, "sockname": self.local}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def hot_path():
    """A started proxy with a client and an upstream connection on fake transports; returns
    (request side, response side) callables, the proxy and the two transports."""
    from pilotfish.proxy import model
    from pilotfish.proxy.server import Proxy
    from pilotfish.proxy.upstream import UpstreamConnection

    port = bench.free_ports(1)[0]
    cfg = model.decode_config(bench.simple_proxy_config(
        "proxy", port, 0, "outbound|80||upstream.default.svc.cluster.local", 9, "OUTBOUND", "80"))
    cfg.access_log.path = "/dev/null"
    cfg.admin.enabled = False
    px = Proxy(cfg)
    await px.start()
    lr = next(iter(px.listeners.values()))
    conn = lr.protocol_for(lr.default)
    down = _Transport(("127.0.0.1", 40000), ("127.0.0.1", port))
    conn.connection_made(down)
    cluster = next(iter(px.snapshot.clusters.values()))
    pool = cluster.pool_for(cluster.hosts[0])
    up = UpstreamConnection(pool)
    upt = _Transport(("127.0.0.1", 9), ("127.0.0.1", 50000))
    up.connection_made(upt)
    pool.active.add(up)
    pool.limits.cx_active += 1
    pool.idle.append(up)
    return (lambda: conn.data_received(REQ)), (lambda: up.data_received(RESP)), px, down, upt


def measure_hot(profile: bool) -> dict:
    async def main() -> dict:
        req, resp, px, down, upt = await hot_path()
        for _ in range(2000):
            req()
            resp()
        best = 1e9
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(5000):
                req()
                resp()
            best = min(best, (time.perf_counter() - t) / 5000)
        tr = tu = 0.0
        for _ in range(20000):
            t0 = time.perf_counter()
            req()
            t1 = time.perf_counter()
            resp()
            tu += time.perf_counter() - t1
            tr += t1 - t0
        if down.writes < 20000 or upt.writes < 20000:
            raise SystemExit(f"the hot path did not proxy: {down.writes} client writes, {upt.writes} upstream writes")
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for _ in range(20000):
                req()
                resp()
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(30)
        await px.drain_and_stop()
        return {"hot_us": best * 1e6, "hot_request_us": tr / 20000 * 1e6, "hot_response_us": tu / 20000 * 1e6}

    import uvloop
    return uvloop.run(main())


# --------------------------------------------------------------------------- the relay (child)


def run_relay(listen: int, target: int, work: bool) -> None:
    import uvloop

    one = None

    class Up(asyncio.Protocol):
        def __init__(self, down: Down) -> None:
            self.down = down

        def connection_made(self, t: asyncio.BaseTransport) -> None:
            self.t = t
            t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, d: bytes) -> None:
            self.down.t.write(d)

    class Down(asyncio.Protocol):
        def connection_made(self, t: asyncio.BaseTransport) -> None:
            self.t, self.buf, self.up = t, [], None
            t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            _, self.up = await asyncio.get_running_loop().create_connection(lambda: Up(self), "127.0.0.1", target)
            for d in self.buf:
                self.up.t.write(d)

        def data_received(self, d: bytes) -> None:
            if one is not None:
                one()
            if self.up is None:
                self.buf.append(d)
            else:
                self.up.t.write(d)

    async def main() -> None:
        nonlocal one
        if work:
            req, resp, *_ = await hot_path()

            def both() -> None:
                req()
                resp()
            one = both
        srv = await asyncio.get_running_loop().create_server(Down, "127.0.0.1", listen)
        await srv.serve_forever()

    uvloop.run(main())


# --------------------------------------------------------------------------- in situ


def measure_in_situ(duration: float, rounds: int) -> dict:
    procs = bench.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="pilotfish-hotpath-"))
    try:
        bench.ensure_debian_tools()
        loadgen = bench.build_loadgen(tmp)
        up1, up2, p_relay, p_work, p_pf, p_ng, adm = bench.free_ports(7)
        bench.start_upstream(procs, tmp, [up1, up2])
        py = sys.executable
        relay = procs.start("relay", [py, __file__, "--relay", str(p_relay), str(up1)])
        work = procs.start("relay+work", [py, __file__, "--relay", str(p_work), str(up1), "--work"])
        pf, _ = bench.start_pilotfish(procs, tmp, bench.pilotfish_cmd(None), "pilotfish proxy", bench.simple_proxy_config(
            "proxy", p_pf, adm, "outbound|80||upstream.default.svc.cluster.local", up1, "OUTBOUND", "80"), p_pf)
        ng = bench.start_nginx_proxy(procs, tmp, "nginx proxy", p_ng, up1)
        bench.wait_ready("relay", relay, p_relay, 30)
        bench.wait_ready("relay+work", work, p_work, 30)
        cases = [("direct", up1, None), ("relay", p_relay, relay.pid), ("relay+work", p_work, work.pid),
                 ("pilotfish", p_pf, pf.pid), ("nginx", p_ng, ng.pid)]
        runs: dict[str, list[dict]] = {}
        for _ in range(rounds):
            for label, port, pid in cases:
                bench.log(f"in situ: {label} ...")
                runs.setdefault(label, []).append(bench.latency_run(
                    procs, tmp, loadgen, label, port, duration, 1.0, {"p": pid} if pid else {}))
        out: dict = {}
        base = {q: sum(r[q] for r in runs["direct"]) / rounds for q in ("p50", "p90", "p99")}
        for label, *_ in cases[1:]:
            rs = runs[label]
            for q in ("p50", "p90", "p99"):
                out[f"{label}_{q}_added_ms"] = sum(r[q] for r in rs) / rounds - base[q]
            out[f"{label}_cpu_per_1000rps"] = sum(r["cpu_p"] for r in rs) / rounds
        return out
    finally:
        procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per in-situ run (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="in-situ rounds, averaged (default 2)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile table of the hot path (stderr)")
    ap.add_argument("--hot-only", action="store_true", help="only the hot measurement")
    ap.add_argument("--relay", nargs=2, type=int, metavar=("LISTEN", "TARGET"), help=argparse.SUPPRESS)
    ap.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.relay:
        run_relay(*args.relay, args.work)
        return 0
    res = measure_hot(args.profile)
    print(f"hot: {res['hot_us']:.1f} us per request (request side {res['hot_request_us']:.1f}, "
          f"response side {res['hot_response_us']:.1f}), no I/O")
    if not args.hot_only:
        res.update(measure_in_situ(args.duration, args.rounds))
        print(f"\nin situ at {bench.RATE} rps over {bench.CONNS} connections (added to direct, ms; "
              "vCPU per 1000 rps)")
        print(f"{'':12}{'+p50':>9}{'+p90':>9}{'+p99':>9}{'cpu':>9}")
        for label in ("relay", "relay+work", "pilotfish", "nginx"):
            print(f"{label:12}{res[label + '_p50_added_ms']:9.3f}{res[label + '_p90_added_ms']:9.3f}"
                  f"{res[label + '_p99_added_ms']:9.3f}{res[label + '_cpu_per_1000rps']:9.3f}")
        in_situ = (res["relay+work_cpu_per_1000rps"] - res["relay_cpu_per_1000rps"]) * 1000
        res["in_situ_work_us"] = in_situ
        res["in_situ_over_hot"] = in_situ / res["hot_us"]
        print(f"\nthe proxy's processing: {res['hot_us']:.1f} us hot, {in_situ:.1f} us in situ "
              f"({res['in_situ_over_hot']:.1f}x)")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
