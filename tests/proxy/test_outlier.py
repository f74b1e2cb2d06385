"""Outlier detection tests with a fake clock."""

from __future__ import annotations

import random

import pytest

from pilotfish.proxy import model
from pilotfish.proxy.lb import Host, make_lb
from pilotfish.proxy.outlier import STAT_NAMES, OutlierDetector


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def hosts(n: int) -> list[Host]:
    return [Host(f"10.0.0.{i + 1}", 80) for i in range(n)]


def od_config(**kw) -> model.OutlierDetection:
    kw.setdefault("consecutive_5xx", 3)
    kw.setdefault("interval", 10)
    kw.setdefault("base_ejection_time", 30)
    kw.setdefault("max_ejection_percent", 100)
    return model.OutlierDetection(**kw)


def detector(n: int = 10, clock: Clock | None = None, **kw):
    hs = hosts(n)
    changes: list[int] = []
    clock = clock or Clock()
    od = OutlierDetector(od_config(**kw), hs, clock=clock, on_change=lambda: changes.append(1))
    return od, hs, clock, changes


def test_consecutive_5xx_ejects_at_threshold_immediately():
    od, hs, clock, changes = detector()
    h = hs[0]
    clock.t = 3.0
    od.record_response(h, 500)
    od.record_response(h, 503)
    assert not h.ejected and changes == []
    od.record_response(h, 599)
    assert h.ejected and changes == [1]
    assert (h.od_ejected_at, h.od_ejections, h.od_backoff) == (3.0, 1, 1)
    assert h.od_ejection_type == "consecutive_5xx" and h.od_5xx == 0
    st = od.stats()
    assert set(STAT_NAMES) <= set(st)
    assert st["ejections_active"] == 1
    assert st["ejections_enforced_total"] == 1
    assert st["ejections_enforced_consecutive_5xx"] == 1
    assert st["ejections_detected_consecutive_5xx"] == 1
    assert st["ejections_total"] == 1 and st["ejections_consecutive_5xx"] == 1
    assert od["ejections_overflow"] == 0


def test_success_resets_and_non_5xx_are_successes():
    od, hs, _, _ = detector()
    h = hs[0]
    for status in (500, 500, 200, 500, 500, 404, 500, 500, 302, 500, 500):
        od.record_response(h, status)
    assert not h.ejected and h.od_5xx == 2


def test_consecutive_gateway_failure():
    od, hs, _, _ = detector(consecutive_5xx=None, consecutive_gateway_failure=2)
    h = hs[0]
    od.record_response(h, 502)
    od.record_response(h, 500)  # a 5xx that is not a gateway error resets the gateway count
    od.record_response(h, 503)
    assert not h.ejected
    od.record_response(h, 504)
    assert h.ejected and h.od_ejection_type == "consecutive_gateway_failure"
    st = od.stats()
    assert st["ejections_enforced_consecutive_gateway_failure"] == 1
    assert st["ejections_detected_consecutive_gateway_failure"] == 1
    assert st["ejections_total"] == 0  # Envoy's deprecated total counts 5xx/success rate only


def test_local_origin_failures_count_as_5xx_without_split():
    od, hs, _, _ = detector(consecutive_gateway_failure=5)
    h = hs[0]
    od.record_local_failure(h)
    od.record_local_failure(h, timeout=True)
    assert (h.od_5xx, h.od_gateway) == (2, 2)
    od.record_local_failure(h)
    assert h.ejected and h.od_ejection_type == "consecutive_5xx"
    h2 = hs[1]
    od.record_local_failure(h2)
    od.record_local_success(h2)  # TCP connect success = a 200
    assert (h2.od_5xx, h2.od_gateway) == (0, 0)


def test_split_local_origin_errors():
    od, hs, _, _ = detector(
        split_external_local_origin_errors=True, consecutive_local_origin_failure=2
    )
    h = hs[0]
    od.record_local_failure(h)
    od.record_response(h, 503)  # the connection worked: resets the local-origin count
    assert (h.od_local, h.od_5xx) == (0, 1)
    od.record_local_failure(h)
    assert h.od_5xx == 1  # local failures do not count as 5xx with the split
    od.record_local_failure(h)
    assert h.ejected and h.od_ejection_type == "consecutive_local_origin_failure"
    st = od.stats()
    assert st["ejections_enforced_consecutive_local_origin_failure"] == 1
    assert st["ejections_detected_consecutive_local_origin_failure"] == 1
    h2 = hs[1]
    od.record_local_failure(h2)
    od.record_local_success(h2)
    assert h2.od_local == 0


def test_ejection_time_grows_and_unejection_waits_for_a_sweep():
    od, hs, clock, changes = detector()
    h = hs[0]

    def fail(at: float) -> None:
        clock.t = at
        for _ in range(3):
            od.record_response(h, 500)

    fail(1.0)  # ejected for 30 s: due at 31, sweeps at 10, 20, 30, 40 ...
    od.tick(30.0)
    assert h.ejected
    od.tick(39.9)
    assert h.ejected
    assert od.next_tick_at == 40.0
    od.tick(40.0)
    assert not h.ejected and changes == [1, 1]
    assert od.stats()["ejections_active"] == 0
    fail(41.0)  # second ejection: 2 x 30 s, due at 101 -> sweep at 110
    assert h.od_backoff == 2 and od.ejection_time(h) == 60.0
    od.tick(100.0)
    assert h.ejected
    od.tick(110.0)
    assert not h.ejected
    od.tick(120.0)  # one interval after its return, not ejected: multiplier 2 -> 1
    assert h.od_backoff == 1
    fail(121.0)  # third ejection: multiplier back to 2 -> 60 s
    assert h.od_backoff == 2 and h.od_ejections == 3
    od.tick(180.0)
    assert h.ejected
    od.tick(190.0)
    assert not h.ejected
    od.tick(230.0)  # sweeps at 200, 210, 220, 230 -> multiplier floors at 0
    assert h.od_backoff == 0


def test_ejection_time_capped_at_max_ejection_time():
    od, hs, clock, _ = detector(base_ejection_time=100, interval=1)
    h = hs[0]
    spans = []
    for _ in range(6):
        for _ in range(3):
            od.record_response(h, 500)
        assert h.ejected
        spans.append(od.ejection_time(h))
        start = clock.t
        while h.ejected:
            clock.t += 1
            od.tick()
        assert clock.t - start == spans[-1]
    # Envoy default max_ejection_time = max(300 s, base); the multiplier stops growing
    # once multiplier * base >= max + base
    assert spans == [100, 200, 300, 300, 300, 300]
    assert h.od_backoff == 4
    od2 = OutlierDetector(od_config(base_ejection_time=400), hosts(2), clock=Clock())
    assert od2.max_ejection_time == 400
    with pytest.raises(ValueError):
        OutlierDetector(od_config(), hosts(2), max_ejection_time=5)


def test_late_and_rare_ticks_equal_punctual_sweeps():
    """Replaying the due sweeps at once gives the state a punctual timer would give."""
    rng = random.Random(11)
    events = sorted(
        (rng.uniform(0, 2000), rng.randrange(4), rng.random() < 0.7) for _ in range(3000)
    )
    results = []
    for tick_every in (1.0, 37.0, None):
        clock = Clock()
        od = OutlierDetector(od_config(consecutive_5xx=2), hosts(4), clock=clock)
        next_tick = 0.0
        for at, i, fails in events:
            if tick_every is not None:
                while next_tick <= at:
                    od.tick(next_tick)
                    next_tick += tick_every
            clock.t = at
            od.record_response(od.hosts[i], 500 if fails else 200)
        od.tick(2000.0)
        results.append(
            [(h.ejected, h.od_backoff, h.od_ejections, h.od_unejected_tick) for h in od.hosts]
        )
    assert results[0] == results[1] == results[2]
    assert any(r[2] > 1 for r in results[0])


def test_max_ejection_percent():
    od, hs, _, _ = detector(n=10, max_ejection_percent=20)
    for h in hs[:3]:
        for _ in range(3):
            od.record_response(h, 500)
    assert [h.ejected for h in hs[:3]] == [True, True, False]
    st = od.stats()
    assert (st["ejections_active"], st["ejections_overflow"]) == (2, 1)
    assert st["ejections_detected_consecutive_5xx"] == 3
    assert hs[2].od_5xx == 0  # the detector's counter resets even when refused


def test_max_ejection_percent_small_cluster_like_current_envoy():
    # 3 hosts, 10%: 1/3 = 33% > 10% -> nothing can be ejected
    od, hs, _, _ = detector(n=3, max_ejection_percent=10)
    for _ in range(3):
        od.record_response(hs[0], 500)
    assert not hs[0].ejected and od["ejections_overflow"] == 1
    # the opt-in "always eject one host" (Envoy's always_eject_one_host, pre-1.27 behaviour)
    hs = hosts(3)
    od = OutlierDetector(
        od_config(max_ejection_percent=10), hs, clock=Clock(), always_eject_one_host=True
    )
    for h in hs[:2]:
        for _ in range(3):
            od.record_response(h, 500)
    assert [h.ejected for h in hs] == [True, False, False]


def test_ejected_host_is_not_ejected_again_and_removed_hosts_are_ignored():
    od, hs, clock, changes = detector(n=4)
    h = hs[0]
    for _ in range(3):
        od.record_response(h, 500)
    for _ in range(6):  # panic-mode traffic to an ejected host
        od.record_response(h, 500)
    assert od["ejections_detected_consecutive_5xx"] == 1 and changes == [1]
    od.update_hosts(hs[1:])
    assert od["ejections_active"] == 0
    for _ in range(3):
        od.record_response(h, 500)  # not a member any more
    assert od["ejections_enforced_total"] == 1
    od.update_hosts(hs)
    assert od["ejections_active"] == 1


def test_drives_the_load_balancer_healthy_set():
    hs = hosts(2)
    cl = model.Cluster(name="c", outlier_detection=od_config())
    lb = make_lb(cl, hs, rand=lambda: 0.0)
    clock = Clock()
    od = OutlierDetector(cl.outlier_detection, hs, clock=clock, on_change=lb.hosts_changed)
    for _ in range(3):
        od.record_response(hs[0], 500)
    assert {lb.choose() for _ in range(4)} == {hs[1]}
    clock.t = 30.0
    od.tick()
    assert {lb.choose() for _ in range(4)} == {hs[0], hs[1]}


def test_config_validation():
    with pytest.raises(ValueError):
        OutlierDetector(od_config(interval=0), hosts(1))
