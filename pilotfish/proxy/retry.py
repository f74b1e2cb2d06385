"""Retry decisions for one request, with Envoy's conditions and backoff.

Sans-IO: randomness is injected, nothing sleeps. One :class:`RetryState` per downstream
request; its classification methods answer "does the policy retry this outcome?", and
:meth:`RetryState.consume` spends one of the policy's retries::

    rs = RetryState(route.retries)
    ...
    if rs.retry_on_status(status) and rs.consume() and budget.try_acquire():
        delay = rs.next_backoff()     # wait, then budget.release() and pick a host with
                                      # exclude=previous_host

The retry conditions (``retry_on``), as Envoy reads them:

- ``5xx``: any 5xx response; also connect failures, resets and per-try timeouts (the
  upstream did not answer).
- ``gateway-error``: 502, 503 and 504 responses; also connect failures, resets and per-try
  timeouts.
- ``reset``: no response at all: disconnect or reset, per-try timeout, connect failure.
- ``reset-before-request``: a reset or connect failure before any request byte went out.
- ``connect-failure``: the connection to the host failed or timed out.
- ``refused-stream``: an HTTP/2 REFUSED_STREAM reset (never happens over HTTP/1).
- ``retriable-4xx``: 409.
- ``retriable-status-codes``: the policy's ``retriable_status_codes``; numeric entries of
  ``retry_on`` (Istio's ``retryOn: "503"``) are retried status codes in any case.
- ``cancelled``, ``deadline-exceeded``, ``internal``, ``resource-exhausted``,
  ``unavailable``: the response's ``grpc-status``
  (:meth:`RetryState.retry_on_grpc_status`).
- ``retriable-headers``, ``envoy-ratelimited``, ``http3-post-connect-failure``: accepted,
  never triggered here (they need response-header matching or HTTP/3).

Unknown names are kept in :attr:`RetryPlan.unknown` and otherwise ignored: a policy is
never rejected for them here (validation belongs to the control plane).

Backoff (Envoy's fully jittered exponential backoff): the n-th retry (n = 0, 1, ...) waits a
uniformly random time in ``[0, min(base * 2**n, max))``; ``base`` defaults to 25 ms and
``max`` to 10 x ``base``. (Envoy's documentation gives ``(2**N - 1) * base`` for retry N;
its code, followed here, draws below an interval that starts at ``base`` and doubles.)
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pilotfish.proxy import model

__all__ = ["RetryPlan", "RetryState", "RetryBudget", "compile_retry_policy", "CONDITIONS"]

R_5XX = 1 << 0
R_GATEWAY_ERROR = 1 << 1
R_RESET = 1 << 2
R_RESET_BEFORE_REQUEST = 1 << 3
R_CONNECT_FAILURE = 1 << 4
R_RETRIABLE_4XX = 1 << 5
R_REFUSED_STREAM = 1 << 6
R_RETRIABLE_STATUS_CODES = 1 << 7
R_RETRIABLE_HEADERS = 1 << 8
R_ENVOY_RATELIMITED = 1 << 9
R_HTTP3_POST_CONNECT_FAILURE = 1 << 10
R_GRPC = 1 << 11  # any of the gRPC conditions

CONDITIONS: dict[str, int] = {
    "5xx": R_5XX,
    "gateway-error": R_GATEWAY_ERROR,
    "reset": R_RESET,
    "reset-before-request": R_RESET_BEFORE_REQUEST,
    "connect-failure": R_CONNECT_FAILURE,
    "retriable-4xx": R_RETRIABLE_4XX,
    "refused-stream": R_REFUSED_STREAM,
    "retriable-status-codes": R_RETRIABLE_STATUS_CODES,
    "retriable-headers": R_RETRIABLE_HEADERS,
    "envoy-ratelimited": R_ENVOY_RATELIMITED,
    "http3-post-connect-failure": R_HTTP3_POST_CONNECT_FAILURE,
}

# gRPC conditions -> grpc-status codes
GRPC_CONDITIONS: dict[str, int] = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}

DEFAULT_BASE_INTERVAL = 0.025

_NO_RESPONSE = R_5XX | R_GATEWAY_ERROR | R_RESET  # retried whatever the reset reason


class RetryPlan:
    """A :class:`model.RetryPolicy` compiled once: condition bits and status sets."""

    __slots__ = (
        "attempts",
        "flags",
        "status_codes",
        "grpc_codes",
        "base_interval",
        "max_interval",
        "per_try_timeout",
        "unknown",
    )

    def __init__(self, policy: model.RetryPolicy | None) -> None:
        flags = 0
        codes: set[int] = set()
        grpc: set[int] = set()
        unknown: list[str] = []
        if policy is None:
            self.attempts = 0
            self.base_interval = DEFAULT_BASE_INTERVAL
            self.max_interval = 10 * DEFAULT_BASE_INTERVAL
            self.per_try_timeout: float | None = None
        else:
            for entry in policy.retry_on:
                for name in str(entry).split(","):
                    name = name.strip().lower()
                    if not name:
                        continue
                    bit = CONDITIONS.get(name)
                    if bit is not None:
                        flags |= bit
                    elif name in GRPC_CONDITIONS:
                        flags |= R_GRPC
                        grpc.add(GRPC_CONDITIONS[name])
                    elif name.isdigit():
                        codes.add(int(name))
                    else:
                        unknown.append(name)
            if flags & R_RETRIABLE_STATUS_CODES:
                codes.update(policy.retriable_status_codes)
            self.attempts = policy.attempts
            base = model.parse_duration(policy.backoff_base_interval)
            base = DEFAULT_BASE_INTERVAL if base is None else base
            mx = model.parse_duration(policy.backoff_max_interval)
            self.base_interval = base
            self.max_interval = 10 * base if mx is None else max(mx, base)
            self.per_try_timeout = model.parse_duration(policy.per_try_timeout) or None
        self.flags = flags
        self.status_codes = frozenset(codes)
        self.grpc_codes = frozenset(grpc)
        self.unknown = tuple(unknown)

    def __repr__(self) -> str:
        names = [n for n, b in CONDITIONS.items() if self.flags & b]
        return f"RetryPlan(attempts={self.attempts}, on={names}, codes={sorted(self.status_codes)})"


_PLANS: dict[int, tuple[model.RetryPolicy, RetryPlan]] = {}
_NO_PLAN = RetryPlan(None)


def compile_retry_policy(policy: model.RetryPolicy | None) -> RetryPlan:
    """The plan for ``policy``, memoised per policy object (routes share one policy object
    per configuration, so a request only pays a dict lookup)."""
    if policy is None:
        return _NO_PLAN
    hit = _PLANS.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    if len(_PLANS) >= 4096:  # old configurations: forget them
        _PLANS.clear()
    plan = RetryPlan(policy)
    _PLANS[id(policy)] = (policy, plan)
    return plan


class RetryState:
    """The retry bookkeeping of one downstream request."""

    __slots__ = ("plan", "attempts_left", "retries", "per_try_timeout", "_rand", "_interval")

    def __init__(
        self,
        policy: model.RetryPolicy | RetryPlan | None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        plan = policy if isinstance(policy, RetryPlan) else compile_retry_policy(policy)
        self.plan = plan
        self.attempts_left = plan.attempts
        self.retries = 0
        self.per_try_timeout = plan.per_try_timeout
        self._rand = rand
        self._interval = plan.base_interval

    @property
    def retried(self) -> bool:
        """At least one retry was used (for ``upstream_rq_retry_success``)."""
        return self.retries > 0

    # -- classification (pure: does the policy retry this outcome?)

    def retry_on_status(self, status: int) -> bool:
        """A response with this status arrived."""
        f = self.plan.flags
        if f & R_5XX and 500 <= status <= 599:
            return True
        if f & R_GATEWAY_ERROR and (status == 502 or status == 503 or status == 504):
            return True
        if f & R_RETRIABLE_4XX and status == 409:
            return True
        return status in self.plan.status_codes

    def retry_on_connect_failure(self) -> bool:
        """The connection to the host could not be established (refused, timed out)."""
        return bool(self.plan.flags & (_NO_RESPONSE | R_CONNECT_FAILURE | R_RESET_BEFORE_REQUEST))

    def retry_on_reset(self, request_sent: bool = True) -> bool:
        """The upstream connection closed or reset before the response headers."""
        f = self.plan.flags
        if f & _NO_RESPONSE:
            return True
        return not request_sent and bool(f & R_RESET_BEFORE_REQUEST)

    def retry_on_timeout(self) -> bool:
        """The per-try timeout fired (the route's overall timeout is never retried)."""
        return bool(self.plan.flags & _NO_RESPONSE)

    def retry_on_refused_stream(self) -> bool:
        """HTTP/2 REFUSED_STREAM reset (not produced over HTTP/1)."""
        return bool(self.plan.flags & (_NO_RESPONSE | R_REFUSED_STREAM | R_RESET_BEFORE_REQUEST))

    def retry_on_grpc_status(self, grpc_status: int) -> bool:
        """A response whose ``grpc-status`` is this code."""
        return grpc_status in self.plan.grpc_codes

    # -- spending

    def consume(self) -> bool:
        """Use one retry; ``False`` when none is left (response flag ``URX``)."""
        if self.attempts_left <= 0:
            return False
        self.attempts_left -= 1
        self.retries += 1
        return True

    def next_backoff(self) -> float:
        """Seconds to wait before the next retry: uniform in [0, current interval); the
        interval starts at the base and doubles at each call, up to the maximum."""
        iv = self._interval
        nxt = iv * 2
        mx = self.plan.max_interval
        self._interval = mx if nxt > mx else nxt
        return self._rand() * iv


class RetryBudget:
    """The cluster's concurrent-retry limit (``circuit_breakers.max_retries``).

    Envoy holds one unit from the decision to retry until the retried request is sent
    (that is, through the backoff wait), and counts refusals in ``upstream_rq_retry_overflow``
    (the failed response then goes to the client, flagged ``URX``).
    """

    __slots__ = ("max_retries", "active", "overflow")

    def __init__(self, max_retries: int = 2**32 - 1) -> None:
        self.max_retries = max_retries
        self.active = 0
        self.overflow = 0

    @classmethod
    def for_cluster(cls, cluster: model.Cluster) -> RetryBudget:
        return cls(cluster.circuit_breakers.max_retries)

    def try_acquire(self) -> bool:
        if self.active >= self.max_retries:
            self.overflow += 1
            return False
        self.active += 1
        return True

    def release(self) -> None:
        if self.active > 0:
            self.active -= 1
