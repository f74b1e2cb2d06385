"""The GC policy (pilotfish.gcpolicy) and the control plane's cycle breaking: a replaced
generation is freed by reference counting, and frozen cyclic garbage by the policy's full
collection."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from pilotfish.gcpolicy import LongLivedGC


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed():
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_frozen_objects_are_skipped_until_a_full_collection(thawed):
    policy = LongLivedGC()
    ref = _cycle()
    policy.settled()  # the cycle is frozen with everything else alive
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert ref() is not None, "a frozen cycle must survive ordinary collections"
    policy.collect()
    assert ref() is None and policy.full_collections == 1


def test_the_tick_collects_when_quiet_and_not_when_busy(thawed):
    loop = asyncio.new_event_loop()
    try:
        policy = LongLivedGC(interval=60.0, quiet=5.0)
        policy.start(loop)  # a full collection: the baseline
        assert policy.full_collections == 1
        ref = _cycle()
        policy.settled()  # a change just now: busy
        policy._tick(loop)
        assert policy.full_collections == 1 and ref() is not None
        policy.last_change -= 10  # quiet for 10 s
        policy._tick(loop)
        assert policy.full_collections == 2 and ref() is None
        policy.stop()
    finally:
        loop.close()


def test_a_busy_process_still_collects_when_the_frozen_heap_doubles(thawed):
    loop = asyncio.new_event_loop()
    try:
        policy = LongLivedGC(interval=60.0, quiet=5.0)
        policy.start(loop)
        garbage = [[] for _ in range(2 * gc.get_freeze_count() + 110_000)]  # lists are tracked
        refs = [_cycle() for _ in range(10)]
        policy.settled()
        policy._tick(loop)  # busy, but the frozen objects grew past twice the survivors
        del garbage
        assert policy.full_collections == 2
        assert all(r() is None for r in refs)
        policy.stop()
    finally:
        loop.close()


def test_a_replaced_generation_is_freed_without_the_cyclic_collector():
    from pilotfish.config import MemoryBackend, Store
    from pilotfish.controlplane.translate import translate
    from pilotfish.controlplane.view import ConfigView
    from pilotfish.proxy import model
    from pilotfish.registry import Registry

    store = Store(MemoryBackend())
    store.apply([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "default"},
         "spec": {"selector": {"app": "a"}, "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a-1", "namespace": "default", "labels": {"app": "a"}},
         "spec": {"containers": [{"name": "c", "image": "i"}]},
         "status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]}},
    ])
    node = model.Node(id="sidecar~10.0.0.5~a-1.default~default.svc.cluster.local", role="sidecar", name="a-1",
                      namespace="default", labels={"app": "a"}, ips=["10.0.0.5"], workload_ports=[80])
    gc.disable()
    try:
        view = ConfigView.build(store.list())
        registry = Registry.build(view)
        assert translate(view, registry, node).clusters  # fills the caches (which refer back)
        refs = [weakref.ref(view), weakref.ref(registry)]
        view.drop_caches()
        registry.drop_caches()
        del view, registry
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()
