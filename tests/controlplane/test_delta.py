"""Delta messages: the server sends a version as the elements the proxy did not hold, the proxy
assembles the whole ProxyConfig again. Sans-IO; the protocol over sockets, with real proxy
processes, is in test_discovery.py."""

from __future__ import annotations

import copy
import json
import random

import msgspec
import pytest

from pilotfish.controlplane.discovery import SnapshotEncoder
from pilotfish.proxy import model
from pilotfish.proxy.discovery_client import Resync, ServerMessage, SnapshotAssembler


def _cluster(i: int, timeout: float = 10.0) -> model.Cluster:
    return model.Cluster(name=f"outbound|80||svc{i}.ns.svc.cluster.local", type="STATIC", connect_timeout=timeout)


def _endpoints(c: model.Cluster, port: int = 80) -> model.ClusterEndpoints:
    return model.ClusterEndpoints(cluster=c.name, endpoints=[model.Endpoint(address="10.0.0.1", port=port)])


def _config(clusters: list[model.Cluster], eps: list[model.ClusterEndpoints], weight: int = 90) -> model.ProxyConfig:
    route = model.RouteConfiguration(name="80", virtual_hosts=[model.VirtualHost(name="svc0:80", domains=["svc0"], routes=[
        model.Route(match=model.RouteMatch(uri=model.StringMatch(prefix="/")), route=model.RouteAction(clusters=[
            model.WeightedCluster(cluster=clusters[0].name, weight=weight),
            model.WeightedCluster(cluster=clusters[1].name, weight=100 - weight)]))])])
    return model.ProxyConfig(version="x", routes=[route], clusters=clusters, endpoints=eps)


def _decode(buf: bytearray) -> ServerMessage:
    return msgspec.json.decode(bytes(buf[4:]), type=ServerMessage)


def _plain(cfg: model.ProxyConfig) -> bytes:
    return msgspec.json.encode(msgspec.structs.replace(cfg, version=""))


def test_deltas_rebuild_the_same_config_and_reuse_unchanged_elements():
    rng = random.Random(11)
    clusters = [_cluster(i) for i in range(60)]
    eps = [_endpoints(c) for c in clusters]
    cfg = _config(clusters, eps)
    asm = SnapshotAssembler()
    prepared = SnapshotEncoder().prepare(cfg)
    full = prepared.message("v1", digests=True)
    got = asm.assemble(_decode(full))
    assert got.version == "v1" and _plain(got) == _plain(cfg)
    base = (prepared.hash, prepared.digests)
    sizes = []
    for step in range(2, 40):
        prev = got
        clusters = list(clusters)
        eps = list(eps)
        change = rng.choice(["weight", "cluster", "add", "remove", "none"])
        if change == "cluster":
            k = rng.randrange(2, len(clusters))
            clusters[k] = _cluster(int(clusters[k].name.split("svc")[1].split(".")[0]), timeout=rng.uniform(1, 9))
        elif change == "add":
            c = _cluster(1000 + step)
            clusters.insert(rng.randrange(2, len(clusters) + 1), c)
            eps.insert(rng.randrange(len(eps) + 1), _endpoints(c))
        elif change == "remove" and len(clusters) > 10:
            gone = clusters.pop(rng.randrange(2, len(clusters)))
            eps = [e for e in eps if e.cluster != gone.name]
        cfg = _config(clusters, eps, weight=rng.randrange(101) if change == "weight" else 90)
        prepared = SnapshotEncoder().prepare(cfg)  # a new encoder per push, as the server does
        delta = prepared.delta_message(f"v{step}", *base)
        msg = _decode(delta)
        assert msg.type == "delta" and msg.base == base[0]
        got = asm.assemble(msg)
        assert got.version == f"v{step}" and _plain(got) == _plain(cfg), change
        assert asm.hash == prepared.hash
        # elements that did not change are the very objects the proxy already had
        before = {c.name: c for c in prev.clusters}
        for c in got.clusters:
            if c.name in before and c == before[c.name]:
                assert c is before[c.name]
        new = json.loads(bytes(msg.new)) if msg.new else {}
        changed = sum(1 for c in got.clusters if c.name not in before or c != before[c.name])
        assert len(new.get("clusters", [])) == changed
        sizes.append((len(delta), len(prepared.message(f"v{step}"))))
        base = (prepared.hash, prepared.digests)
    # a delta is a fraction of the whole snapshot
    assert all(d < f / 2 for d, f in sizes), sizes


def test_a_delta_that_cannot_be_assembled_raises_resync_and_forgets():
    clusters = [_cluster(i) for i in range(20)]
    cfg1 = _config(clusters, [_endpoints(c) for c in clusters])
    clusters2 = clusters[:-1] + [_cluster(99)]
    cfg2 = _config(clusters2, [_endpoints(c) for c in clusters2], weight=50)
    p1, p2 = SnapshotEncoder().prepare(cfg1), SnapshotEncoder().prepare(cfg2)
    good = _decode(p2.delta_message("v2", p1.hash, p1.digests))

    def fresh() -> SnapshotAssembler:
        a = SnapshotAssembler()
        a.assemble(_decode(p1.message("v1", digests=True)))
        return a

    # the right base assembles
    assert _plain(fresh().assemble(copy.copy(good))) == _plain(cfg2)
    # no snapshot held, or another base
    with pytest.raises(Resync, match="holds no snapshot"):
        SnapshotAssembler().assemble(good)
    a = fresh()
    with pytest.raises(Resync, match="delta against"):
        a.assemble(msgspec.structs.replace(good, base="f" * 32))
    with pytest.raises(Resync):  # it forgot what it held: even the right delta now fails
        a.assemble(good)
    # a full snapshot without digests cannot be the base of a delta either
    a = SnapshotAssembler()
    a.assemble(_decode(p1.message("v1")))
    with pytest.raises(Resync):
        a.assemble(good)
    # a wrong content hash, an element missing, an element too many, broken digests
    with pytest.raises(Resync, match="hashes to"):
        fresh().assemble(msgspec.structs.replace(good, hash="0" * 32))
    new = json.loads(bytes(good.new))
    short = {**new, "clusters": []}
    with pytest.raises(Resync, match="neither held nor sent"):
        fresh().assemble(msgspec.structs.replace(good, new=msgspec.Raw(json.dumps(short).encode())))
    extra = {**new, "secrets": [{"name": "s"}]}
    with pytest.raises(Resync):
        fresh().assemble(msgspec.structs.replace(good, new=msgspec.Raw(json.dumps(extra).encode())))
    with pytest.raises(Resync, match="base64"):
        fresh().assemble(msgspec.structs.replace(good, digests={**good.digests, "clusters": "!!"}))
    # an invalid element is an invalid snapshot (a NACK), not a resync
    bad = {**new, "clusters": [{"name": "x", "type": "NOPE"}]}
    with pytest.raises(msgspec.ValidationError):
        fresh().assemble(msgspec.structs.replace(good, new=msgspec.Raw(json.dumps(bad).encode())))
