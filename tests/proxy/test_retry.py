"""Retry classification, attempts, backoff and the cluster retry budget."""

from __future__ import annotations

import random

import pytest

from pilotfish.proxy import model
from pilotfish.proxy.retry import RetryBudget, RetryPlan, RetryState, compile_retry_policy


def state(*retry_on: str, **kw) -> RetryState:
    return RetryState(model.RetryPolicy(retry_on=list(retry_on), **kw))


def outcomes(rs: RetryState) -> dict[str, bool]:
    return {
        "connect": rs.retry_on_connect_failure(),
        "reset": rs.retry_on_reset(),
        "reset_unsent": rs.retry_on_reset(request_sent=False),
        "timeout": rs.retry_on_timeout(),
        "refused": rs.retry_on_refused_stream(),
    }


def retried_statuses(rs: RetryState) -> set[int]:
    return {s for s in range(100, 600) if rs.retry_on_status(s)}


def test_istio_default_policy():
    rs = RetryState(model.RetryPolicy())  # connect-failure,refused-stream,unavailable,cancelled,503
    assert rs.attempts_left == 2
    assert retried_statuses(rs) == {503}
    assert outcomes(rs) == {
        "connect": True,
        "reset": False,
        "reset_unsent": False,
        "timeout": False,
        "refused": True,
    }
    assert rs.retry_on_grpc_status(14) and rs.retry_on_grpc_status(1)
    assert not rs.retry_on_grpc_status(4)


@pytest.mark.parametrize(
    ("cond", "statuses", "expected"),
    [
        (
            "5xx",
            set(range(500, 600)),
            dict(connect=True, reset=True, reset_unsent=True, timeout=True, refused=True),
        ),
        (
            "gateway-error",
            {502, 503, 504},
            dict(connect=True, reset=True, reset_unsent=True, timeout=True, refused=True),
        ),
        (
            "reset",
            set(),
            dict(connect=True, reset=True, reset_unsent=True, timeout=True, refused=True),
        ),
        (
            "reset-before-request",
            set(),
            dict(connect=True, reset=False, reset_unsent=True, timeout=False, refused=True),
        ),
        (
            "connect-failure",
            set(),
            dict(connect=True, reset=False, reset_unsent=False, timeout=False, refused=False),
        ),
        (
            "refused-stream",
            set(),
            dict(connect=False, reset=False, reset_unsent=False, timeout=False, refused=True),
        ),
        (
            "retriable-4xx",
            {409},
            dict(connect=False, reset=False, reset_unsent=False, timeout=False, refused=False),
        ),
        (
            "unavailable",
            set(),
            dict(connect=False, reset=False, reset_unsent=False, timeout=False, refused=False),
        ),
        (
            "cancelled",
            set(),
            dict(connect=False, reset=False, reset_unsent=False, timeout=False, refused=False),
        ),
        (
            "envoy-ratelimited",
            set(),
            dict(connect=False, reset=False, reset_unsent=False, timeout=False, refused=False),
        ),
    ],
)
def test_each_condition(cond, statuses, expected):
    rs = state(cond)
    assert retried_statuses(rs) == statuses
    assert outcomes(rs) == expected


def test_status_codes_numeric_and_retriable_status_codes():
    assert retried_statuses(state("retriable-status-codes", retriable_status_codes=[418, 429])) == {
        418,
        429,
    }
    # the policy's codes only count with retriable-status-codes, numeric entries always
    assert retried_statuses(state("connect-failure", retriable_status_codes=[418])) == set()
    assert retried_statuses(state("503", "429")) == {503, 429}
    # Istio-style comma lists and whitespace are accepted
    rs = state("5xx, retriable-4xx", "gateway-error")
    assert retried_statuses(rs) == set(range(500, 600)) | {409}


def test_grpc_conditions():
    rs = state("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
    assert {c for c in range(17) if rs.retry_on_grpc_status(c)} == {1, 4, 8, 13, 14}
    assert retried_statuses(rs) == set()


def test_unknown_conditions_are_tolerated():
    rs = state("5xx", "bogus-thing", "retriable-headers")
    assert rs.plan.unknown == ("bogus-thing",)
    assert rs.retry_on_status(500)


def test_attempts_and_consume():
    rs = state("5xx", attempts=2)
    assert not rs.retried
    assert rs.consume() and rs.consume()
    assert not rs.consume()
    assert (rs.attempts_left, rs.retries, rs.retried) == (0, 2, True)
    none = RetryState(None)
    assert none.attempts_left == 0 and not none.consume()
    assert not none.retry_on_status(503) and not none.retry_on_connect_failure()
    assert not state("5xx", attempts=0).consume()


def test_backoff_bounds_default():
    # with rand -> 1 each delay approaches its bound: 25, 50, 100, 200 ms, then capped at 250
    rs = RetryState(model.RetryPolicy(retry_on=["5xx"], attempts=8), rand=lambda: 0.999999)
    bounds = [0.025, 0.05, 0.1, 0.2, 0.25, 0.25, 0.25]
    for b in bounds:
        d = rs.next_backoff()
        assert b * 0.999 < d < b
    rs = RetryState(model.RetryPolicy(), rand=lambda: 0.0)
    assert rs.next_backoff() == 0.0


def test_backoff_is_fully_jittered_within_bounds():
    rng = random.Random(5)
    for _ in range(200):
        rs = RetryState(
            model.RetryPolicy(backoff_base_interval="100ms", backoff_max_interval="0.5s"),
            rand=rng.random,
        )
        for b in (0.1, 0.2, 0.4, 0.5, 0.5):
            assert 0.0 <= rs.next_backoff() < b
    # max below base is raised to base
    rs = RetryState(
        model.RetryPolicy(backoff_base_interval=0.2, backoff_max_interval=0.1), rand=lambda: 0.5
    )
    assert [rs.next_backoff() for _ in range(3)] == [0.1, 0.1, 0.1]


def test_per_try_timeout_and_plan_cache():
    p = model.RetryPolicy(per_try_timeout="250ms")
    rs = RetryState(p)
    assert rs.per_try_timeout == 0.25
    assert compile_retry_policy(p) is rs.plan
    assert RetryState(rs.plan).plan is rs.plan
    assert isinstance(compile_retry_policy(None), RetryPlan)
    assert RetryState(model.RetryPolicy()).per_try_timeout is None


def test_retry_budget():
    b = RetryBudget.for_cluster(
        model.Cluster(name="c", circuit_breakers=model.CircuitBreakers(max_retries=2))
    )
    assert b.try_acquire() and b.try_acquire()
    assert not b.try_acquire()
    assert (b.active, b.overflow) == (2, 1)
    b.release()
    assert b.try_acquire()
    b.release()
    b.release()
    b.release()
    assert b.active == 0
    assert RetryBudget().try_acquire()
