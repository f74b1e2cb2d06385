"""Load balancer tests: seeded randomness, exact sequences where the policy is deterministic,
distribution bounds where it is not."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pilotfish.proxy import model
from pilotfish.proxy.http import Request
from pilotfish.proxy.lb import (
    Host,
    LeastRequestLB,
    MaglevLB,
    RandomLB,
    RingHashLB,
    RoundRobinLB,
    cookie_value,
    hash64,
    hash_key_for,
    maglev_table,
    make_lb,
    new_cookie,
    reconcile_hosts,
)


def hosts(n: int, weights: list[int] | None = None) -> list[Host]:
    ws = weights or [1] * n
    return [Host(f"10.0.0.{i + 1}", 8080, weight=ws[i]) for i in range(n)]


def cluster(policy: str = "ROUND_ROBIN", **kw) -> model.Cluster:
    if policy in ("RING_HASH", "MAGLEV") and "hash_policy" not in kw:
        kw["hash_policy"] = model.HashPolicy(header_name="x-user")
    return model.Cluster(name="outbound|80||svc", lb_policy=policy, **kw)


def seeded(seed: int = 1):
    return random.Random(seed).random


def zero() -> float:
    return 0.0


# --------------------------------------------------------------------------- hosts


def test_host_key_and_reconcile_keeps_runtime_state():
    assert Host("10.1.2.3", 80).key == "10.1.2.3:80"
    assert Host("fd00::1", 80).key == "[fd00::1]:80"
    with pytest.raises(ValueError):
        Host("10.0.0.1", 80, weight=0)
    eps = [model.Endpoint(address="10.0.0.1", port=80), model.Endpoint(address="10.0.0.2", port=80)]
    first = reconcile_hosts([], eps)
    first[0].active_requests = 3
    first[0].ejected = True
    eps2 = [
        model.Endpoint(address="10.0.0.1", port=80, weight=5, health="DRAINING"),
        model.Endpoint(address="10.0.0.3", port=80),
        model.Endpoint(address="10.0.0.3", port=80),  # duplicate: first wins
    ]
    second = reconcile_hosts(first, eps2)
    assert [h.key for h in second] == ["10.0.0.1:80", "10.0.0.3:80"]
    assert second[0] is first[0]
    assert (second[0].active_requests, second[0].ejected) == (3, True)
    assert (second[0].weight, second[0].health) == (5, "DRAINING")
    assert second[1].active_requests == 0


def test_make_lb_classes_and_empty():
    for policy, cls in [
        ("ROUND_ROBIN", RoundRobinLB),
        ("LEAST_REQUEST", LeastRequestLB),
        ("RANDOM", RandomLB),
        ("RING_HASH", RingHashLB),
        ("MAGLEV", MaglevLB),
    ]:
        lb = make_lb(cluster(policy, maglev_table_size=251), [], seeded())
        assert isinstance(lb, cls)
        assert lb.choose() is None
        assert lb.choose(hash_key=42) is None
        one = hosts(1)
        lb.update_hosts(one)
        assert lb.choose(hash_key=42) is one[0]
        assert lb.choose(exclude=one[0]) is one[0]  # nothing else to offer


# --------------------------------------------------------------------------- round robin


def test_round_robin_unweighted_cycles_from_random_start():
    hs = hosts(4)
    lb = make_lb(cluster(), hs, rand=lambda: 0.5)  # start index int(0.5 * 4) = 2
    picks = [lb.choose() for _ in range(8)]
    assert picks == [hs[2], hs[3], hs[0], hs[1]] * 2


def test_round_robin_weighted_exact_sequence():
    a, b = hosts(2, [3, 1])
    lb = make_lb(cluster(), [a, b], rand=zero)
    assert [lb.choose() for _ in range(8)] == [a, a, b, a] * 2
    a, b, c = hosts(3, [5, 1, 1])
    lb = make_lb(cluster(), [a, b, c], rand=zero)
    assert [lb.choose() for _ in range(7)] == [a, a, a, b, c, a, a]
    # weights are reduced by their gcd: 4:2 has a period of 3
    a, b = hosts(2, [4, 2])
    lb = make_lb(cluster(), [a, b], rand=zero)
    assert [lb.choose() for _ in range(6)] == [a, b, a] * 2


def test_round_robin_weighted_large_total_uses_online_edf(monkeypatch):
    monkeypatch.setattr(RoundRobinLB, "max_schedule", 5)
    hs = hosts(3, [7, 2, 1])
    lb = make_lb(cluster(), hs, rand=zero)
    assert lb._edf is not None
    counts = Counter(lb.choose() for _ in range(1000))
    assert all(abs(counts[h] - 100 * h.weight) <= 1 for h in hs)
    nxt = lb._edf.heap[0][2]
    assert lb.choose(exclude=nxt) is not nxt


def test_round_robin_exclude_skips_previous_host():
    hs = hosts(3)
    lb = make_lb(cluster(), hs, rand=zero)
    assert lb.choose(exclude=hs[0]) is hs[1]
    assert lb.choose() is hs[2]
    a, b = hosts(2, [3, 1])
    lb = make_lb(cluster(), [a, b], rand=zero)
    assert lb.choose(exclude=a) is b


# --------------------------------------------------------------------------- least request


def test_p2c_takes_the_less_loaded_of_two_samples():
    a, b = hosts(2)
    draws = iter([0.0, 0.6])  # samples a then b
    lb = make_lb(cluster("LEAST_REQUEST"), [a, b], rand=lambda: next(draws))
    a.active_requests, b.active_requests = 5, 1
    assert lb.choose() is b
    draws = iter([0.0, 0.6])
    a.active_requests = b.active_requests = 2
    assert lb.choose() is a  # tie: the first sample


def test_p2c_prefers_less_loaded_hosts():
    hs = hosts(4)
    hs[0].active_requests = 10
    lb = make_lb(cluster("LEAST_REQUEST"), hs, rand=seeded(7))
    counts = Counter(lb.choose() for _ in range(8000))
    # the loaded host wins only when drawn twice: 1/16
    assert counts[hs[0]] / 8000 < 0.09
    for h in hs[1:]:
        assert 0.25 < counts[h] / 8000 < 0.37


def test_p2c_exclude():
    hs = hosts(3)
    lb = make_lb(cluster("LEAST_REQUEST"), hs, rand=zero)  # always samples hs[0] twice
    for _ in range(20):
        assert lb.choose(exclude=hs[0]) is not hs[0]


def test_weighted_least_request_follows_weights_then_load():
    a, b = hosts(2, [3, 1])
    lb = make_lb(cluster("LEAST_REQUEST"), [a, b], rand=seeded())
    counts = Counter(lb.choose() for _ in range(400))
    assert (counts[a], counts[b]) == (300, 100)
    a.active_requests = 8  # effective weight 3 / 9 < 1 / 1
    counts = Counter(lb.choose() for _ in range(400))
    assert counts[b] > counts[a]
    assert all(lb.choose(exclude=b) is a for _ in range(10))


# --------------------------------------------------------------------------- random


def test_random_uniform_and_weighted():
    hs = hosts(4)
    lb = make_lb(cluster("RANDOM"), hs, rand=seeded(3))
    counts = Counter(lb.choose() for _ in range(8000))
    assert all(0.22 < counts[h] / 8000 < 0.28 for h in hs)
    hs = hosts(2, [1, 3])
    lb = make_lb(cluster("RANDOM"), hs, rand=seeded(3))
    counts = Counter(lb.choose() for _ in range(8000))
    assert 0.72 < counts[hs[1]] / 8000 < 0.78
    for _ in range(50):
        assert lb.choose(exclude=hs[1]) is hs[0]


# --------------------------------------------------------------------------- health and panic


def test_unhealthy_draining_and_ejected_hosts_are_skipped():
    hs = hosts(4)
    hs[0].health = "UNHEALTHY"
    hs[1].health = "DRAINING"
    hs[2].ejected = True
    for policy in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"):
        lb = make_lb(cluster(policy, maglev_table_size=251), hs, seeded())
        assert {lb.choose(hash_key=k) for k in range(50)} == {hs[3]}
        assert lb.healthy == [hs[3]] and not lb.panic


def test_no_healthy_host_without_panic_threshold_is_no_host():
    hs = hosts(3)
    for h in hs:
        h.ejected = True
    lb = make_lb(cluster(), hs, seeded())
    assert lb.choose() is None
    hs[1].ejected = False
    lb.hosts_changed()
    assert lb.choose() is hs[1]


def test_panic_mode_uses_all_hosts_below_min_health_percent():
    hs = hosts(4)
    od = model.OutlierDetection(min_health_percent=50)
    lb = make_lb(cluster(outlier_detection=od), hs, rand=zero)
    hs[0].ejected = hs[1].ejected = True
    lb.hosts_changed()
    assert not lb.panic  # 2/4 = 50% is not below 50%
    assert {lb.choose() for _ in range(8)} == {hs[2], hs[3]}
    hs[2].health = "UNHEALTHY"
    lb.hosts_changed()
    assert lb.panic  # 25% < 50%
    assert {lb.choose() for _ in range(8)} == set(hs)
    for h in hs:
        h.ejected = True
    lb.hosts_changed()
    assert lb.panic and lb.choose() is not None
    # explicit override
    lb2 = make_lb(cluster(), hs, rand=zero, panic_threshold=0)
    assert lb2.choose() is None


def test_rebuild_only_when_available_set_changes(monkeypatch):
    hs = hosts(3)
    lb = make_lb(cluster("RING_HASH"), hs, seeded())
    calls = []
    orig = RingHashLB._rebuild
    monkeypatch.setattr(
        RingHashLB, "_rebuild", lambda self, avail: calls.append(1) or orig(self, avail)
    )
    lb.hosts_changed()
    lb.update_hosts(list(hs))
    assert calls == []
    hs[0].weight = 2
    lb.hosts_changed()
    assert calls == [1]
    hs[1].ejected = True
    lb.hosts_changed()
    assert calls == [1, 1]


# --------------------------------------------------------------------------- hash keys


def req(headers=None, target="/", source_ip="10.9.9.9", source_port=5555):
    return Request(
        "GET",
        target,
        dict(headers or {}),
        source_ip=source_ip,
        source_port=source_port,
        dest_ip="10.0.0.1",
        dest_port=80,
    )


def test_hash64_is_stable_across_processes():
    # fixed values: BLAKE2b does not depend on PYTHONHASHSEED
    assert hash64("alice") == 9933345172075899469
    assert hash64("10.0.0.1:80") == 0x6B80BC2D14BABA10
    assert hash64("alice") == hash64(b"alice")


def test_hash_key_for_each_policy():
    hp = model.HashPolicy
    r = req({"x-user": "alice", "cookie": 'a=1; session="s1"; b=2'}, "/p?u=bob&x=1")
    assert hash_key_for(hp(header_name="X-User"), r) == hash64("alice")
    assert hash_key_for(hp(header_name="x-none"), r) is None
    assert hash_key_for(hp(cookie="session"), r) == hash64("s1")
    assert hash_key_for(hp(cookie="nope"), r) is None
    assert hash_key_for(hp(use_source_ip=True), r) == hash64("10.9.9.9")
    assert hash_key_for(hp(use_source_ip=True), req(source_ip="")) is None
    assert hash_key_for(hp(query_parameter="u"), r) == hash64("bob")
    assert hash_key_for(hp(query_parameter="v"), r) is None
    assert cookie_value("a=1;b=2", "b") == "2"
    assert cookie_value(None, "b") is None
    lb = make_lb(cluster("RING_HASH"), hosts(3), seeded())
    assert lb.hash_key(r) == hash64("alice")
    assert lb.choose(r) is lb.choose(hash_key=hash64("alice"))


def test_new_cookie_like_envoy():
    p = model.HashPolicy(cookie="sticky", cookie_ttl="1h", cookie_path="/api")
    r = req()
    key, set_cookie = new_cookie(p, r)
    name, _, rest = set_cookie.partition("=")
    value = rest.split(";")[0].strip('"')
    assert name == "sticky" and len(value) == 16
    assert set_cookie == f'sticky="{value}"; Max-Age=3600; Path=/api; HttpOnly'
    assert key == hash64(value)
    # the next request carries the cookie and hashes to the same key
    r2 = req({"cookie": set_cookie.split(";")[0]})
    assert hash_key_for(p, r2) == key
    # same connection -> same cookie; zero TTL -> session cookie
    assert new_cookie(p, req())[0] == key
    assert new_cookie(p, req(source_port=6000))[0] != key
    session = new_cookie(model.HashPolicy(cookie="s", cookie_ttl=0), r)[1]
    assert "Max-Age" not in session and session.endswith("; HttpOnly")


# --------------------------------------------------------------------------- ring hash


def keys(n: int) -> list[int]:
    return [hash64(f"user-{i}") for i in range(n)]


def test_ring_hash_same_key_same_host_and_order_independent():
    hs = hosts(5)
    lb = make_lb(cluster("RING_HASH"), hs, seeded())
    shuffled = list(hs)
    random.Random(4).shuffle(shuffled)
    lb2 = make_lb(cluster("RING_HASH"), shuffled, seeded(9))
    ks = keys(2000)
    first = [lb.choose(hash_key=k) for k in ks]
    assert first == [lb.choose(hash_key=k) for k in ks]
    assert first == [lb2.choose(hash_key=k) for k in ks]
    counts = Counter(first)
    assert all(0.12 < counts[h] / 2000 < 0.28 for h in hs)
    assert len(lb._ring) >= 1024


def test_ring_hash_adding_a_host_moves_few_keys():
    hs = hosts(10)
    lb = make_lb(cluster("RING_HASH"), hs, seeded())
    ks = keys(5000)
    before = [lb.choose(hash_key=k) for k in ks]
    new = Host("10.0.1.99", 8080)
    lb.update_hosts(hs + [new])
    after = [lb.choose(hash_key=k) for k in ks]
    moved = sum(a is not b for a, b in zip(before, after, strict=True))
    to_new = sum(a is new for a in after)
    assert 0.06 < to_new / 5000 < 0.12  # the newcomer's share, ~1/11
    # Envoy sizes the ring to ~ring_size entries, so each host's share of entries shrinks
    # (103 -> 94 here) and a few keys also move between old hosts
    assert moved / 5000 < 0.2


def test_ring_hash_weights_and_exclusion_and_no_key():
    a, b = hosts(2, [1, 3])
    lb = make_lb(cluster("RING_HASH"), [a, b], seeded(5))
    counts = Counter(lb.choose(hash_key=k) for k in keys(4000))
    assert 0.65 < counts[b] / 4000 < 0.85
    for k in keys(50):
        h = lb.choose(hash_key=k)
        other = lb.choose(hash_key=k, exclude=h)
        assert other is not h
        assert other is lb.choose(hash_key=k, exclude=h)  # deterministic
    counts = Counter(lb.choose() for _ in range(4000))  # no key: random point
    assert 0.65 < counts[b] / 4000 < 0.85


# --------------------------------------------------------------------------- maglev


def _naive_maglev(keys_: list[str], size: int) -> list[int]:
    """Reference: the unweighted algorithm from the Maglev paper, written plainly."""
    from pilotfish.proxy.lb import _hash128

    perms = []
    for k in keys_:
        a, b = _hash128(k)
        perms.append((a % size, b % (size - 1) + 1))
    nxt = [0] * len(keys_)
    table = [-1] * size
    filled = 0
    while True:
        for i, (off, skip) in enumerate(perms):
            c = (off + nxt[i] * skip) % size
            while table[c] >= 0:
                nxt[i] += 1
                c = (off + nxt[i] * skip) % size
            table[c] = i
            nxt[i] += 1
            filled += 1
            if filled == size:
                return table


def test_maglev_table_matches_paper_and_balances():
    ks = [f"10.0.0.{i}:80" for i in range(7)]
    assert maglev_table(ks, [1] * 7, 1009) == _naive_maglev(ks, 1009)
    counts = Counter(maglev_table(ks, [1] * 7, 1009))
    assert max(counts.values()) - min(counts.values()) <= 1
    counts = Counter(maglev_table(ks[:3], [1, 2, 3], 601))
    assert all(abs(counts[i] - 100 * (i + 1)) <= 2 for i in range(3))


def test_maglev_requires_prime_table_size():
    with pytest.raises(ValueError, match="prime"):
        make_lb(cluster("MAGLEV", maglev_table_size=1000), hosts(2))


def test_maglev_default_table_stability_and_disruption():
    hs = hosts(10)
    lb = make_lb(cluster("MAGLEV"), hs, seeded())
    assert len(lb._table) == 65537
    ks = keys(5000)
    before = [lb.choose(hash_key=k) for k in ks]
    assert before == [lb.choose(hash_key=k) for k in ks]
    counts = Counter(before)
    assert all(0.07 < counts[h] / 5000 < 0.13 for h in hs)
    new = Host("10.0.1.99", 8080)
    lb.update_hosts(hs + [new])
    after = [lb.choose(hash_key=k) for k in ks]
    moved = sum(a is not b for a, b in zip(before, after, strict=True))
    to_new = sum(a is new for a in after)
    assert 0.05 < to_new / 5000 < 0.14
    assert moved / 5000 < 0.2  # mostly the newcomer's share, a little reshuffling


def test_maglev_exclusion_and_order_independence():
    hs = hosts(4)
    lb = make_lb(cluster("MAGLEV", maglev_table_size=4099), hs, seeded())
    lb2 = make_lb(cluster("MAGLEV", maglev_table_size=4099), hs[::-1], seeded())
    ks = keys(500)
    assert [lb.choose(hash_key=k) for k in ks] == [lb2.choose(hash_key=k) for k in ks]
    spread = Counter()
    for k in ks:
        h = lb.choose(hash_key=k)
        other = lb.choose(hash_key=k, exclude=h)
        assert other is not h
        if h is hs[0]:
            spread[other] += 1
    assert len(spread) == 3  # the excluded host's keys spread over the others
