"""The config store: kubectl apply semantics, bookkeeping, all-or-nothing applies, watches."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pilotfish.api.loader import load_text
from pilotfish.api.types import networking
from pilotfish.config import ApplyError, MemoryBackend, NotFound, Store

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  labels: {team: books}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"""
NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, namespace: ignored}\n"


def docs(*texts: str):
    return [r for t in texts for r in load_text(t, "t.yaml")]


def new_store(**kw) -> Store:
    ticks = iter(f"2026-01-01T00:00:{i:02d}Z" for i in range(60))
    return Store(MemoryBackend(), clock=lambda: next(ticks), **kw)


def test_create_configure_unchanged():
    s = new_store()
    results = s.apply(docs(VS, DR, NS))
    assert [r.action for r in results] == ["created", "created", "created"]
    assert [str(r) for r in results] == [
        "virtualservice.networking.istio.io/reviews -n default created",
        "destinationrule.networking.istio.io/reviews -n default created",
        "namespace/prod created",
    ]
    assert s.resource_version == 3
    vs = s.get("VirtualService", None, "reviews")
    assert vs.namespace == "default" and vs.generation == 1 and vs.resource_version == 1
    md = vs.data["metadata"]
    assert md["namespace"] == "default" and md["resourceVersion"] == "1" and md["generation"] == 1
    assert md["creationTimestamp"] == "2026-01-01T00:00:00Z" and md["uid"]
    # the typed object sees the stored metadata
    assert isinstance(vs.obj, networking.VirtualService)
    assert vs.obj.metadata.namespace == "default" and vs.obj.metadata.generation == 1
    # cluster-scoped: no namespace, even if the document had one
    ns = s.get("Namespace", None, "prod")
    assert ns.namespace is None and "namespace" not in ns.data["metadata"]

    assert [r.action for r in s.apply(docs(VS, DR))] == ["unchanged", "unchanged"]
    assert s.resource_version == 3

    # a spec change: new resourceVersion and generation; identity kept
    changed = VS.replace("subset: v1", "subset: v2")
    (r,) = s.apply(docs(changed))
    assert r.action == "configured"
    vs2 = s.get("vs", "default", "reviews")
    assert (vs2.resource_version, vs2.generation) == (4, 2)
    assert (vs2.created, vs2.uid) == (vs.created, vs.uid)

    # a metadata-only change: new resourceVersion, same generation
    (r,) = s.apply(docs(changed.replace("team: books", "team: shop")))
    assert r.action == "configured"
    vs3 = s.get("vs", "default", "reviews")
    assert (vs3.resource_version, vs3.generation) == (5, 2)


def test_explicit_namespace_and_server_metadata_are_ignored_in_comparison():
    s = new_store()
    s.apply(docs(VS))
    stored = s.get("vs", None, "reviews").data
    # re-applying what `get -o yaml` would show (with server fields) changes nothing
    import yaml

    (r,) = s.apply(load_text(yaml.safe_dump(stored), "t.yaml"))
    assert r.action == "unchanged"
    (r,) = s.apply(docs(VS.replace("name: reviews\n", "name: reviews\n  namespace: default\n")))
    assert r.action == "unchanged"


def test_invalid_document_refuses_the_whole_apply():
    s = new_store()
    s.apply(docs(DR))
    events = []
    s.subscribe(events.append)
    bad = VS.replace("host: reviews, subset: v1", "host: '*'")
    with pytest.raises(ApplyError) as e:
        s.apply(docs(VS.replace("reviews", "ratings"), DR.replace("v1}", "v9}"), bad))
    assert [i.path for i in e.value.errors] == ["spec.http[0].route[0].destination.host"]
    assert "nothing changed" in str(e.value) and "VirtualService default/reviews" in str(e.value)
    assert s.resource_version == 1 and len(s) == 1 and events == []
    assert s.get("vs", None, "ratings") is None
    assert s.get("dr", None, "reviews").data["spec"]["subsets"][0]["labels"] == {"version": "v1"}


def test_unknown_kinds_are_skipped_with_their_warning():
    s = new_store()
    results = s.apply(docs("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", VS))
    assert [r.action for r in results] == ["skipped", "created"]
    assert results[0].warnings and "unknown kind" in results[0].warnings[0].message
    assert "t.yaml:1 skipped" in str(results[0])


def test_same_object_twice_in_one_apply_last_wins():
    s = new_store()
    results = s.apply(docs(VS, VS.replace("subset: v1", "subset: v3")))
    assert [r.action for r in results] == ["created", "configured"]
    so = s.get("vs", None, "reviews")
    assert so.data["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v3"
    assert (so.resource_version, so.generation) == (2, 2)


def test_two_gateway_kinds_do_not_collide():
    s = new_store()
    istio_gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n"
    k8s_gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: istio\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n"
    assert [r.action for r in s.apply(docs(istio_gw, k8s_gw))] == ["created", "created"]
    assert s.get("Gateway", None, "gw").group == "networking.istio.io"
    assert s.get("gateways.gateway.networking.k8s.io", None, "gw").group == "gateway.networking.k8s.io"


def test_list_get_delete():
    s = new_store()
    s.apply(docs(VS, DR, VS.replace("name: reviews", "name: reviews\n  namespace: prod"), NS))
    assert [o.key.name for o in s.list("VirtualService")] == ["reviews", "reviews"]
    assert [o.namespace for o in s.list("VirtualService")] == ["default", "prod"]
    assert [o.kind for o in s.list(namespace="default")] == ["DestinationRule", "VirtualService"]
    assert len(s.list()) == 4
    gone = s.delete("VirtualService", "prod", "reviews")
    assert gone.namespace == "prod" and s.resource_version == 5
    assert s.get("VirtualService", "prod", "reviews") is None
    with pytest.raises(NotFound, match="virtualservice.networking.istio.io prod/reviews not found"):
        s.delete("VirtualService", "prod", "reviews")
    removed = s.delete_resources(docs(VS, DR))
    assert {o.kind for o in removed} == {"VirtualService", "DestinationRule"}
    assert [o.kind for o in s.list()] == ["Namespace"]


def test_apply_accepts_plain_mappings():
    s = new_store()
    (r,) = s.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}])
    assert r.action == "created" and s.get("cm", None, "c").obj.data == {"k": "v"}


def test_dry_run_changes_nothing():
    s = new_store()
    results = s.apply(docs(VS), dry_run=True)
    assert [r.action for r in results] == ["created"]
    assert len(s) == 0 and s.resource_version == 0


def test_backend_failure_leaves_state_and_sends_no_event():
    backend = MemoryBackend()
    s = Store(backend)
    s.apply(docs(DR))
    events = []
    s.subscribe(events.append)
    backend.fail_next_commit = OSError(28, "No space left on device")
    with pytest.raises(OSError):
        s.apply(docs(VS))
    assert len(s) == 1 and s.resource_version == 1 and events == []
    assert [r.action for r in s.apply(docs(VS))] == ["created"]


def test_watch_events_with_replay_and_filters():
    s = new_store()
    s.apply(docs(DR))
    seen, only_vs = [], []
    sub = s.subscribe(seen.append, replay=True)
    s.subscribe(only_vs.append, kind="VirtualService")
    s.apply(docs(VS))
    s.apply(docs(VS.replace("subset: v1", "subset: v2")))
    s.delete("vs", None, "reviews")
    assert [(e.type, e.object.kind, e.resource_version) for e in seen] == [
        ("ADDED", "DestinationRule", 1),
        ("ADDED", "VirtualService", 2),
        ("MODIFIED", "VirtualService", 3),
        ("DELETED", "VirtualService", 4),
    ]
    assert seen[2].old.resource_version == 2 and seen[1].old is None
    assert [e.type for e in only_vs] == ["ADDED", "MODIFIED", "DELETED"]
    sub.close()
    s.apply(docs(VS))
    assert len(seen) == 4 and len(only_vs) == 4


def test_callbacks_may_read_the_store():
    s = new_store()
    names = []
    s.subscribe(lambda ev: names.append([o.name for o in s.list()]))
    s.apply(docs(VS, DR))
    # events follow the commit of the whole apply: both objects are visible from the first one
    assert names == [["reviews", "reviews"], ["reviews", "reviews"]]


def test_async_watch_from_another_thread():
    s = new_store()
    s.apply(docs(DR))

    async def main():
        got = []
        stream = s.watch(replay=True)

        def writer():
            s.apply(docs(VS))
            s.delete("dr", None, "reviews")

        async for ev in stream:
            got.append((ev.type, ev.object.kind))
            if len(got) == 1:
                threading.Thread(target=writer).start()
            if len(got) == 3:
                break
        await stream.aclose()
        return got

    got = asyncio.run(asyncio.wait_for(main(), 5))
    assert got == [("ADDED", "DestinationRule"), ("ADDED", "VirtualService"), ("DELETED", "DestinationRule")]
    assert s._subs == []  # leaving the loop unsubscribed


def test_async_watch_same_loop_writer():
    s = new_store()

    async def main():
        stream = s.watch(replay=False, kind="DestinationRule")
        task = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        s.apply(docs(VS, DR))
        ev = await asyncio.wait_for(task, 2)
        await stream.aclose()
        return ev

    ev = asyncio.run(main())
    assert (ev.type, ev.object.kind) == ("ADDED", "DestinationRule")
