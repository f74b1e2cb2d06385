"""Outlier detection (passive health checking), with Envoy's semantics as Istio configures it.

Sans-IO: the clock is injected; nothing here sleeps or schedules. The pipeline reports
each attempt's outcome and calls :meth:`OutlierDetector.tick` periodically::

    od = OutlierDetector(cluster.outlier_detection, hosts, on_change=lb.hosts_changed)
    od.record_response(host, status)        # every upstream response (any status)
    od.record_local_failure(host)           # connect failure / reset before the response
    od.record_local_failure(host, timeout=True)   # (per-try) timeout
    od.record_local_success(host)           # TCP proxy: connection established
    od.tick()                               # at least every ``od.interval`` seconds

Per-host state lives on the :class:`~pilotfish.proxy.lb.Host` objects (``ejected`` and the
``od_*`` slots), so recording a success is two attribute reads.

What Envoy does, and so what this does:

- Detectors (Istio enables each with ``enforcing_* = 100``): *consecutive 5xx* counts 5xx
  responses; *consecutive gateway failure* counts 502/503/504. Unless
  ``split_external_local_origin_errors``, local-origin failures count in both, as the status
  Envoy turns them into (connect failure and reset: 503, timeout: 504). With the split they
  count only in *consecutive local-origin failure* instead, and any response from the host
  (proof the connection worked) resets that counter. A non-5xx response resets the 5xx and
  gateway counters; a 5xx that is not a gateway error resets the gateway counter. A threshold
  of ``None`` (or 0) disables that detector.
- A detector fires when its counter *reaches* the threshold, and the host is ejected at once
  (not at the next sweep) if it is not ejected already; the counter of that detector is
  reset whether the ejection happened or not.
- ``max_ejection_percent``: an ejection happens only if ``100 * (ejected + 1) / hosts <=
  max_ejection_percent``. This is current Envoy (since 1.27): with the default 10% a cluster
  of fewer than 10 hosts never ejects anything. Older Envoy always allowed the first
  ejection; ``always_eject_one_host=True`` restores that (Envoy's ``always_eject_one_host``,
  which Istio does not expose). Refused ejections count in ``ejections_overflow``.
- Ejection time: ``min(base_ejection_time * m, max_ejection_time)`` where the multiplier
  ``m`` grows by one at each ejection (while ``m * base < max + base``) and shrinks by one at
  each sweep during which the host, back in service for at least one interval, is not
  ejected. ``max_ejection_time`` is Envoy's default, ``max(300 s, base_ejection_time)``
  (Istio does not set it). No jitter (Envoy's ``max_ejection_time_jitter`` defaults to 0).
- Hosts return to service only at a sweep: sweeps happen every ``interval`` from the
  detector's creation (Envoy's interval timer). :meth:`tick` runs every sweep that is due,
  so calling it late or rarely gives the same result as a punctual timer; records of
  errors also run due sweeps first. Unejection resets all the host's counters.
- Success-rate and failure-percentage detection are not implemented (Istio does not
  configure them); their stats exist and stay 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pilotfish.proxy import model

if TYPE_CHECKING:
    from pilotfish.proxy.lb import Host

__all__ = ["OutlierDetector", "STAT_NAMES", "DEFAULT_MAX_EJECTION_TIME"]

DEFAULT_MAX_EJECTION_TIME = 300.0

CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"

# Envoy's cluster.<name>.outlier_detection.* statistics (ejections_active is a gauge).
STAT_NAMES = (
    "ejections_active",
    "ejections_overflow",
    "ejections_enforced_total",
    "ejections_enforced_consecutive_5xx",
    "ejections_detected_consecutive_5xx",
    "ejections_enforced_consecutive_gateway_failure",
    "ejections_detected_consecutive_gateway_failure",
    "ejections_enforced_consecutive_local_origin_failure",
    "ejections_detected_consecutive_local_origin_failure",
    "ejections_enforced_success_rate",
    "ejections_detected_success_rate",
    "ejections_enforced_local_origin_success_rate",
    "ejections_detected_local_origin_success_rate",
    "ejections_enforced_failure_percentage",
    "ejections_detected_failure_percentage",
    "ejections_enforced_local_origin_failure_percentage",
    "ejections_detected_local_origin_failure_percentage",
    # deprecated in Envoy, still emitted by it
    "ejections_total",
    "ejections_consecutive_5xx",
)


def _seconds(v: float | str | None, what: str) -> float:
    s = model.parse_duration(v)
    if s is None:
        raise ValueError(f"outlier_detection.{what} is required")
    return s


class OutlierDetector:
    """Consecutive-error outlier detection for the hosts of one cluster.

    ``on_change()`` is called (no arguments) after ejections or unejections change the
    healthy set: wire it to the balancer's ``hosts_changed``.
    """

    def __init__(
        self,
        config: model.OutlierDetection,
        hosts: Iterable[Host],
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], object] | None = None,
        *,
        max_ejection_time: float | None = None,
        always_eject_one_host: bool = False,
    ) -> None:
        self.config = config
        self.clock = clock
        self.on_change = on_change
        self.interval = _seconds(config.interval, "interval")
        if self.interval <= 0:
            raise ValueError("outlier_detection.interval must be positive")
        self.base_ejection_time = _seconds(config.base_ejection_time, "base_ejection_time")
        if max_ejection_time is None:
            max_ejection_time = max(DEFAULT_MAX_EJECTION_TIME, self.base_ejection_time)
        elif max_ejection_time < self.base_ejection_time:
            raise ValueError("max_ejection_time cannot be smaller than base_ejection_time")
        self.max_ejection_time = max_ejection_time
        self.max_ejection_percent = config.max_ejection_percent
        self.always_eject_one_host = always_eject_one_host
        self.split = config.split_external_local_origin_errors
        self._t5xx = config.consecutive_5xx or 0
        self._tgw = config.consecutive_gateway_failure or 0
        self._tlocal = (config.consecutive_local_origin_failure or 0) if self.split else 0
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._start = clock()
        self._now = self._start
        self._next_tick = 1  # index of the next sweep; sweep k is at start + k * interval
        self._next_tick_at = self._start + self.interval
        self._hosts: list[Host] = []
        self._members: set[Host] = set()
        self.update_hosts(hosts)

    # ------------------------------------------------------------------ membership

    def update_hosts(self, hosts: Iterable[Host]) -> None:
        """The cluster's hosts changed. Hosts that stay keep their state (pass the same
        ``Host`` objects: see :func:`pilotfish.proxy.lb.reconcile_hosts`); hosts that left no
        longer count, ejected or not."""
        self._hosts = list(hosts)
        self._members = set(self._hosts)
        self._stats["ejections_active"] = sum(1 for h in self._hosts if h.ejected)

    @property
    def hosts(self) -> list[Host]:
        return self._hosts

    # ------------------------------------------------------------------ results

    def record_response(self, host: Host, status: int) -> None:
        """An upstream response's status (call for every response, success included)."""
        if status < 500 or status > 599:
            if host.od_5xx or host.od_gateway:
                host.od_5xx = 0
                host.od_gateway = 0
            if host.od_local:
                host.od_local = 0
            return
        if host.od_local:
            host.od_local = 0
        self._error(host, status)

    def record_local_failure(self, host: Host, timeout: bool = False) -> None:
        """A local-origin failure: connect failure or reset before the response (Envoy
        reports it as 503), or a timeout (504) when ``timeout``."""
        if not self.split:
            self._error(host, 504 if timeout else 503)
            return
        self._maybe_sweep()
        host.od_local += 1
        if host.od_local == self._tlocal:
            self._detected(host, CONSECUTIVE_LOCAL_ORIGIN_FAILURE)

    def record_local_success(self, host: Host) -> None:
        """The connection to the host succeeded and is all there is to report (TCP proxy).
        Envoy counts it as a 200 without the split and as a local-origin success with it."""
        if self.split:
            host.od_local = 0
        elif host.od_5xx or host.od_gateway:
            host.od_5xx = 0
            host.od_gateway = 0

    def _error(self, host: Host, status: int) -> None:
        self._maybe_sweep()
        fire_gw = False
        if status == 502 or status == 503 or status == 504:
            host.od_gateway += 1
            fire_gw = host.od_gateway == self._tgw
        else:
            host.od_gateway = 0
        host.od_5xx += 1
        fire_5xx = host.od_5xx == self._t5xx
        if fire_gw:
            self._detected(host, CONSECUTIVE_GATEWAY_FAILURE)
        if fire_5xx:
            self._detected(host, CONSECUTIVE_5XX)

    def _detected(self, host: Host, kind: str) -> None:
        if host.ejected or host not in self._members:
            return  # Envoy ignores detections on ejected or removed hosts (counter not reset)
        st = self._stats
        st["ejections_detected_" + kind] += 1
        self._eject(host, kind)
        if kind == CONSECUTIVE_5XX:
            st["ejections_consecutive_5xx"] += 1
            host.od_5xx = 0
        elif kind == CONSECUTIVE_GATEWAY_FAILURE:
            host.od_gateway = 0
        else:
            host.od_local = 0

    def _eject(self, host: Host, kind: str) -> None:
        st = self._stats
        active = st["ejections_active"]
        allowed = 100 * (active + 1) <= self.max_ejection_percent * len(self._hosts)
        if not allowed and self.always_eject_one_host and active == 0:
            allowed = True
        if not allowed:
            st["ejections_overflow"] += 1
            return
        if kind == CONSECUTIVE_5XX:
            st["ejections_total"] += 1
        st["ejections_active"] = active + 1
        st["ejections_enforced_total"] += 1
        st["ejections_enforced_" + kind] += 1
        host.ejected = True
        host.od_ejections += 1
        host.od_ejected_at = self._now
        host.od_ejection_type = kind
        if (
            host.od_backoff * self.base_ejection_time
            < self.max_ejection_time + self.base_ejection_time
        ):
            host.od_backoff += 1
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ sweeps

    def ejection_time(self, host: Host) -> float:
        """How long ``host`` stays ejected (from ``host.od_ejected_at``) at its multiplier."""
        return min(self.base_ejection_time * host.od_backoff, self.max_ejection_time)

    @property
    def next_tick_at(self) -> float:
        """Clock time of the next sweep (schedule the next :meth:`tick` at or after it)."""
        return self._next_tick_at

    def tick(self, now: float | None = None) -> None:
        """Run the sweeps that are due by ``now`` (default: the clock)."""
        self._now = now = self.clock() if now is None else now
        if now >= self._next_tick_at:
            self._sweep(now)

    def _maybe_sweep(self) -> None:
        self._now = now = self.clock()
        if now >= self._next_tick_at:
            self._sweep(now)

    def _tick_time(self, k: int) -> float:
        return self._start + k * self.interval

    def _sweep(self, now: float) -> None:
        """Replay every sweep due by ``now`` (indices first..last), host by host: the host
        returns at the first due sweep at which its ejection time has passed; afterwards,
        each sweep at least one interval after its return lowers its multiplier by one."""
        first = self._next_tick
        last = int((now - self._start) // self.interval)
        while self._tick_time(last + 1) <= now:
            last += 1
        while last >= first and self._tick_time(last) > now:
            last -= 1
        if last < first:
            return
        changed = False
        st = self._stats
        for h in self._hosts:
            if h.ejected:
                ejected_at = h.od_ejected_at if h.od_ejected_at is not None else self._start
                span = self.ejection_time(h)
                k = max(first, math.ceil((ejected_at + span - self._start) / self.interval))
                while k > first and self._tick_time(k - 1) - ejected_at >= span:
                    k -= 1
                while self._tick_time(k) - ejected_at < span:
                    k += 1
                if k > last:
                    continue
                h.ejected = False
                h.od_5xx = h.od_gateway = h.od_local = 0
                h.od_unejected_tick = k
                st["ejections_active"] -= 1
                changed = True
            u = h.od_unejected_tick
            if u is not None and h.od_backoff:
                from_k = max(first, u + 1)
                if last >= from_k:
                    h.od_backoff = max(0, h.od_backoff - (last - from_k + 1))
        self._next_tick = last + 1
        self._next_tick_at = self._tick_time(last + 1)
        if changed and self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, int]:
        """Envoy's ``outlier_detection.*`` counters and the ``ejections_active`` gauge."""
        return dict(self._stats)

    def __getitem__(self, name: str) -> int:
        return self._stats[name]
