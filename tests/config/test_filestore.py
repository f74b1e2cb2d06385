"""The file backend: restarts keep the config; crashes never leave a half-written state.

The backend keeps a snapshot (``store.json``) and a journal of the change sets since
(``journal.log``). ``compact_bytes=0`` makes every commit write a snapshot; the default appends.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pilotfish.api.loader import load_text
from pilotfish.config import FileBackend, Record, StateError, Store, filestore

REPO = Path(__file__).resolve().parents[2]

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""
NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n"


def docs(*texts):
    return [r for t in texts for r in load_text(t, "t.yaml")]


def journal_lines(state_dir: Path) -> list[bytes]:
    path = state_dir / "config" / "journal.log"
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def crash_image(state_dir: Path) -> Path:
    """A copy of the state directory's files as they are now, as if the machine lost power
    (every write here was synced before the call returned), for a second process to load
    while the first still holds the lock."""
    dst = state_dir.parent / (state_dir.name + "-crash")
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "config").mkdir(parents=True)
    for f in (state_dir / "config").iterdir():
        if f.name != ".lock":
            shutil.copy2(f, dst / "config" / f.name)
    return dst


def crash_state(state_dir: Path) -> tuple[int, dict[tuple[str, str], int]]:
    """The resource version and objects (kind, name -> resource version) a restart after a crash
    would find."""
    s = Store(FileBackend(crash_image(state_dir)))
    try:
        return s.resource_version, {(o.kind, o.name): o.resource_version for o in s.list()}
    finally:
        s.close()


def rec(name: str, rv: int, value: str = "v") -> Record:
    return Record(
        group="", kind="ConfigMap", namespace="default", name=name, resource_version=rv, generation=1,
        created="2026-01-01T00:00:00Z", uid=f"uid-{name}",
        data={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"},
              "data": {"value": value}},
    )


def key(name: str) -> tuple[str, str, str | None, str]:
    return ("", "ConfigMap", "default", name)


def loaded(state_dir: Path, **kw) -> tuple[int, dict[str, str]]:
    """(resource version, {name: value}) as a fresh backend loads them."""
    b = FileBackend(state_dir, **kw)
    try:
        snap = b.load()
        return snap.resource_version, {r.name: r.data["data"]["value"] for r in snap.records}
    finally:
        b.close()


@pytest.mark.parametrize("compact_bytes", [None, 0], ids=["journal", "snapshot-every-commit"])
def test_restart_keeps_the_config(tmp_path, compact_bytes):
    s = Store(FileBackend(tmp_path, compact_bytes=compact_bytes))
    s.apply(docs(VS, NS))
    s.apply(docs(VS.replace("subset: v1", "subset: v2")))
    before = {o.key: (o.resource_version, o.generation, o.uid, o.created, o.data) for o in s.list()}
    s.close()
    if compact_bytes is None:  # two small commits: two journal records, no snapshot yet
        assert len(journal_lines(tmp_path)) == 2 and not (tmp_path / "config" / "store.json").exists()
    else:
        assert (tmp_path / "config" / "store.json").is_file() and journal_lines(tmp_path) == []

    s2 = Store(FileBackend(tmp_path, compact_bytes=compact_bytes))
    assert s2.resource_version == 3
    assert {o.key: (o.resource_version, o.generation, o.uid, o.created, o.data) for o in s2.list()} == before
    vs = s2.get("VirtualService", None, "reviews")
    assert vs.obj is not None and vs.obj.spec.http[0].route[0].destination.subset == "v2"
    assert (vs.file, vs.line) == ("t.yaml", 1)
    # counters continue where they were
    (r,) = s2.apply(docs(VS))
    assert r.action == "configured" and s2.resource_version == 4 and s2.get("vs", None, "reviews").generation == 3
    s2.delete("Namespace", None, "prod")
    s2.close()
    s3 = Store(FileBackend(tmp_path, compact_bytes=compact_bytes))
    assert [o.kind for o in s3.list()] == ["VirtualService"] and s3.resource_version == 5
    s3.close()


def test_leftover_temp_file_from_a_crash_is_ignored_and_removed(tmp_path):
    s = Store(FileBackend(tmp_path, compact_bytes=0))
    s.apply(docs(VS))
    s.close()
    config = tmp_path / "config"
    good = (config / "store.json").read_bytes()
    # a writer died after creating its temporary file, before the rename
    leftover = config / "store.json.tmp.abc123"
    leftover.write_bytes(good[: len(good) // 2])
    s2 = Store(FileBackend(tmp_path))
    assert not leftover.exists()
    assert [o.name for o in s2.list()] == ["reviews"] and s2.resource_version == 1
    s2.close()


def test_crash_before_the_rename_keeps_the_previous_state(tmp_path, monkeypatch):
    # every commit writes a snapshot: this is the compaction path
    s = Store(FileBackend(tmp_path, compact_bytes=0))
    s.apply(docs(VS))
    state = (tmp_path / "config" / "store.json").read_bytes()

    def crash(src, dst):
        raise OSError(5, "simulated crash during rename")

    monkeypatch.setattr(filestore.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        s.apply(docs(NS, VS.replace("subset: v1", "subset: v9")))
    monkeypatch.undo()
    # the in-memory store kept the old version, the file is untouched, no temp file left
    assert s.resource_version == 1 and [o.kind for o in s.list()] == ["VirtualService"]
    assert (tmp_path / "config" / "store.json").read_bytes() == state
    assert not list((tmp_path / "config").glob("store.json.tmp.*"))
    s.close()
    s2 = Store(FileBackend(tmp_path))
    assert s2.get("vs", None, "reviews").data["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
    s2.close()


@pytest.mark.parametrize(
    ("compact_bytes", "sync_call", "state_file"),
    [(None, "fdatasync", "journal.log"), (0, "fsync", "store.json")],
    ids=["journal-append", "snapshot"],
)
def test_crash_during_the_write_keeps_the_previous_state(tmp_path, monkeypatch, compact_bytes, sync_call, state_file):
    s = Store(FileBackend(tmp_path, compact_bytes=compact_bytes))
    s.apply(docs(VS))
    state = (tmp_path / "config" / state_file).read_bytes()

    def crash(fd):
        raise OSError(5, "simulated power loss before fsync")

    monkeypatch.setattr(filestore.os, sync_call, crash)
    with pytest.raises(OSError, match="simulated power loss"):
        s.apply(docs(NS))
    monkeypatch.undo()
    assert (tmp_path / "config" / state_file).read_bytes() == state
    assert s.resource_version == 1 and [o.kind for o in s.list()] == ["VirtualService"]
    assert crash_state(tmp_path) == (1, {("VirtualService", "reviews"): 1})
    s.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pilotfish.api.loader import load_text
    from pilotfish.config import FileBackend, Store

    tag = sys.argv[2]
    compact_bytes = None if sys.argv[3] == "default" else int(sys.argv[3])
    store = Store(FileBackend(sys.argv[1], compact_bytes=compact_bytes))
    padding = "x" * 2000  # make each state file large enough that writes take a while
    i = 0
    while True:
        i += 1
        n = f"{tag}-{i}"  # unique: every apply changes one object and bumps the version by one
        text = (
            "apiVersion: v1\\nkind: ConfigMap\\n"
            f"metadata: {{name: cm-{i % 50}, annotations: {{n: '{n}'}}}}\\n"
            f"data: {{pad: '{padding}', n: '{n}'}}\\n"
        )
        store.apply(load_text(text, "gen.yaml"))
        print(store.resource_version, flush=True)
    """
)


# journal only; a snapshot every ~8 commits (the kill may land in a compaction); one every commit
@pytest.mark.parametrize("rounds", [["default", "20000", "20000", "0", "default"]])
def test_killed_writer_leaves_the_last_good_state(tmp_path, rounds):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    expected: dict[str, str] = {}  # name -> the last value written
    start = 0  # the resource version before this round's writer started
    for rnd, compact_bytes in enumerate(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), f"r{rnd}", compact_bytes],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        committed = 0
        deadline = time.monotonic() + 20
        try:
            while committed < start + 40 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                committed = int(line)
        finally:
            proc.send_signal(signal.SIGKILL)  # no cleanup, no atexit: a crash at a random point
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert committed >= start + 40, "the writer did not get going"
        # the snapshot, if there is one, is always complete and valid: never a torn write
        if (tmp_path / "config" / "store.json").exists():
            snap = json.loads((tmp_path / "config" / "store.json").read_bytes())
            assert snap["format"] == filestore.FORMAT
        s = Store(FileBackend(tmp_path))
        # every commit the writer reported is there (it may have made one more before dying)
        assert committed <= s.resource_version <= committed + 1
        assert s.load_issues == []
        objs = s.list("ConfigMap")
        assert objs and all(o.obj is not None for o in objs)
        assert max(o.resource_version for o in objs) == s.resource_version
        # ... and nothing else: exactly commits 1..n of this round, each once, in order
        for i in range(1, s.resource_version - start + 1):
            expected[f"cm-{i % 50}"] = f"r{rnd}-{i}"
        assert {o.name: o.data["data"]["n"] for o in objs} == expected
        start = s.resource_version
        s.close()


def test_a_state_directory_has_one_user(tmp_path):
    b = FileBackend(tmp_path)
    with pytest.raises(StateError, match="in use"):
        FileBackend(tmp_path)
    b.close()
    FileBackend(tmp_path).close()


def test_corrupt_state_is_reported_not_ignored(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "store.json").write_text('{"format": "pilotfish.config/v1", "resource_version": 3, "rec')
    with pytest.raises(StateError, match="cannot read the stored configuration"):
        Store(FileBackend(tmp_path))
    (tmp_path / "config" / "store.json").write_text('{"format": "something/v9", "resource_version": 3, "records": []}')
    with pytest.raises(StateError, match="unknown format"):
        Store(FileBackend(tmp_path))


# --- the journal -----------------------------------------------------------------------------


def test_a_commit_appends_one_record_and_leaves_the_snapshot_alone(tmp_path):
    b = FileBackend(tmp_path, compact_bytes=0)
    b.load()
    b.commit([rec(f"cm-{i}", i + 1) for i in range(20)], [], 20)  # compact_bytes=0: a snapshot
    b.close()
    b = FileBackend(tmp_path)
    b.load()
    snapshot = (tmp_path / "config" / "store.json").read_bytes()
    b.commit([rec("cm-3", 21, "changed")], [], 21)
    b.commit([], [key("cm-4"), key("cm-5")], 22)
    assert (tmp_path / "config" / "store.json").read_bytes() == snapshot
    lines = journal_lines(tmp_path)
    assert len(lines) == 2
    length, crc, payload = lines[1].rstrip(b"\n").split(b" ", 2)
    assert int(length) == len(payload) and int(crc, 16) == filestore.zlib.crc32(payload)
    assert json.loads(payload) == {"resource_version": 22, "puts": [], "deletes": [list(key("cm-4")), list(key("cm-5"))]}
    rv, objs = crash_state(tmp_path)
    assert rv == 22 and len(objs) == 18
    b.close()


def test_a_state_directory_from_before_the_journal_loads(tmp_path):
    # what the previous version left: store.json only
    (tmp_path / "config").mkdir()
    old = filestore._File(format=filestore.FORMAT, resource_version=7, records=[rec("a", 3), rec("b", 7)])
    (tmp_path / "config" / "store.json").write_bytes(filestore._encoder.encode(old))
    b = FileBackend(tmp_path)
    assert b.load().resource_version == 7
    b.commit([rec("c", 8)], [key("a")], 8)
    b.close()
    assert loaded(tmp_path) == (8, {"b": "v", "c": "v"})


@pytest.mark.parametrize("compact_bytes", [None, 0, 3000], ids=["journal-only", "snapshot-every-commit", "compact-every-few"])
def test_reload_after_many_commits_gives_the_same_state(tmp_path, compact_bytes):
    rnd = random.Random(42)
    expected: dict[str, str] = {}
    rv = 0
    b = FileBackend(tmp_path, compact_bytes=compact_bytes)
    b.load()
    compactions = 0
    for step in range(300):
        puts, deletes = [], []
        for name in rnd.sample([f"cm-{i}" for i in range(40)], rnd.randint(1, 4)):
            if name in expected and rnd.random() < 0.3:
                deletes.append(key(name))
            else:
                rv += 1
                puts.append(rec(name, rv, f"{step}-{rnd.random():.6f}"))
        rv += not puts  # a delete-only change set still takes a version
        b.commit(puts, deletes, rv)
        for k in deletes:
            expected.pop(k[3])
        expected.update({r.name: r.data["data"]["value"] for r in puts})
        if not journal_lines(tmp_path):
            compactions += 1
        if step % 50 == 49:  # a clean restart now and then
            b.close()
            assert loaded(tmp_path, compact_bytes=compact_bytes) == (rv, expected)
            b = FileBackend(tmp_path, compact_bytes=compact_bytes)
            b.load()
    # and a crash at the end (no close)
    assert loaded(crash_image(tmp_path)) == (rv, expected)
    b.close()
    assert loaded(tmp_path) == (rv, expected)
    if compact_bytes is None:
        assert compactions == 0 and not (tmp_path / "config" / "store.json").exists()
    elif compact_bytes == 0:
        assert compactions == 300
    else:
        assert 10 < compactions < 300


def three_commits(state_dir: Path) -> list[bytes]:
    """Commits 1 (a, b), 2 (c, delete a) and 3 (b changed, delete c); the journal's lines."""
    b = FileBackend(state_dir)
    b.load()
    b.commit([rec("a", 1), rec("b", 1)], [], 1)
    b.commit([rec("c", 2)], [key("a")], 2)
    b.commit([rec("b", 3, "three")], [key("c")], 3)
    b.close()
    lines = journal_lines(state_dir)
    assert len(lines) == 3
    return lines


@pytest.mark.parametrize("cut", ["after-one-byte", "in-header", "in-payload", "before-newline"])
def test_a_torn_last_record_is_dropped(tmp_path, cut):
    lines = three_commits(tmp_path)
    last = lines[2]
    keep = {"after-one-byte": 1, "in-header": 5, "in-payload": len(last) // 2, "before-newline": len(last) - 1}[cut]
    journal = tmp_path / "config" / "journal.log"
    journal.write_bytes(b"".join(lines[:2]) + last[:keep])
    assert loaded(tmp_path) == (2, {"b": "v", "c": "v"})
    # the torn bytes are gone, so the next commit is not appended after them
    assert journal.read_bytes() == b"".join(lines[:2])
    b = FileBackend(tmp_path)
    b.load()
    b.commit([rec("d", 3)], [], 3)
    b.close()
    assert loaded(tmp_path) == (3, {"b": "v", "c": "v", "d": "v"})
    assert len(journal_lines(tmp_path)) == 3


@pytest.mark.parametrize("garbage", [b"garbage", b"\x00" * 4096, b"12 0000", b"9999 deadbeef {\n"])
def test_garbage_after_the_last_record_is_dropped(tmp_path, garbage):
    lines = three_commits(tmp_path)
    journal = tmp_path / "config" / "journal.log"
    journal.write_bytes(b"".join(lines) + garbage)
    assert loaded(tmp_path) == (3, {"b": "three"})
    assert journal.read_bytes() == b"".join(lines)


def test_a_bad_checksum_in_the_last_record_drops_it(tmp_path):
    lines = three_commits(tmp_path)
    damaged = lines[2].replace(b'"three"', b'"thrEe"')  # same length, different bytes
    assert damaged != lines[2] and len(damaged) == len(lines[2])
    (tmp_path / "config" / "journal.log").write_bytes(b"".join(lines[:2]) + damaged)
    assert loaded(tmp_path) == (2, {"b": "v", "c": "v"})
    assert journal_lines(tmp_path) == lines[:2]


def test_a_damaged_record_before_intact_ones_is_an_error_not_a_silent_loss(tmp_path):
    lines = three_commits(tmp_path)
    damaged = lines[1].replace(b'"c"', b'"C"')
    journal = tmp_path / "config" / "journal.log"
    journal.write_bytes(lines[0] + damaged + lines[2])
    with pytest.raises(StateError, match="intact records follow"):
        FileBackend(tmp_path).load()
    assert journal.read_bytes() == lines[0] + damaged + lines[2]  # left for a human to look at


@pytest.mark.parametrize("how", ["journal-reset-fails", "old-journal-put-back"])
def test_a_crash_between_the_snapshot_and_the_journal_reset(tmp_path, monkeypatch, how):
    b = FileBackend(tmp_path)
    b.load()
    b.commit([rec("x", 1, "first"), rec("y", 1)], [], 1)
    b.commit([], [key("x")], 2)  # replayed over the snapshot below, this would delete x again
    b.commit([rec("z", 3)], [], 3)
    old_journal = (tmp_path / "config" / "journal.log").read_bytes()
    b.compact_bytes = 0  # the next commit writes a snapshot
    if how == "journal-reset-fails":
        def fail(fd, length):
            raise OSError(5, "simulated crash before the journal reset")

        monkeypatch.setattr(filestore.os, "ftruncate", fail)
    b.commit([rec("x", 4, "second")], [], 4)  # durable in the snapshot: the commit succeeds
    monkeypatch.undo()
    image = crash_image(tmp_path)
    if how == "old-journal-put-back":
        (image / "config" / "journal.log").write_bytes(old_journal)
    assert (image / "config" / "journal.log").read_bytes() == old_journal
    assert loaded(image) == (4, {"x": "second", "y": "v", "z": "v"})
    assert journal_lines(image) == []  # nothing in it was newer than the snapshot
    # the running backend goes on: with the journal not reset, its next commit compacts again
    b.compact_bytes = None
    b.commit([rec("w", 5)], [key("y")], 5)
    assert len(journal_lines(tmp_path)) == (0 if how == "journal-reset-fails" else 1)
    assert loaded(crash_image(tmp_path)) == (5, {"x": "second", "z": "v", "w": "v"})
    b.close()
    assert loaded(tmp_path) == (5, {"x": "second", "z": "v", "w": "v"})


@pytest.mark.parametrize("failure", ["short-write", "write", "fdatasync"])
def test_a_failed_append_is_cut_off(tmp_path, monkeypatch, failure):
    s = Store(FileBackend(tmp_path))
    s.apply(docs(VS))
    before = (tmp_path / "config" / "journal.log").read_bytes()
    real_write = os.write
    calls = []

    def failing_write(fd, data):
        calls.append(len(data))
        if failure == "short-write" and len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # the rest fails next call
        if failure == "short-write":
            raise OSError(28, "No space left on device")
        real_write(fd, bytes(data[:10]))  # some bytes reach the file before the error
        raise OSError(28, "No space left on device")

    def failing_sync(fd):
        raise OSError(5, "Input/output error")

    if failure == "fdatasync":
        monkeypatch.setattr(filestore.os, "fdatasync", failing_sync)
    else:
        monkeypatch.setattr(filestore.os, "write", failing_write)
    with pytest.raises(OSError):
        s.apply(docs(NS, VS.replace("subset: v1", "subset: v2")))
    monkeypatch.undo()
    # nothing changed: not in memory, not on disk
    assert s.resource_version == 1 and [(o.kind, o.generation) for o in s.list()] == [("VirtualService", 1)]
    assert (tmp_path / "config" / "journal.log").read_bytes() == before
    # the next commit (reusing resource versions 2 and 3) goes through; restarts see exactly it
    s.apply(docs(NS))
    expected = (2, {("VirtualService", "reviews"): 1, ("Namespace", "prod"): 2})
    assert crash_state(tmp_path) == expected
    s.close()
    s2 = Store(FileBackend(tmp_path))
    assert (s2.resource_version, {(o.kind, o.name): o.resource_version for o in s2.list()}) == expected
    assert s2.get("vs", None, "reviews").data["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
    s2.close()


@pytest.mark.parametrize("then", ["commit", "close"])
def test_a_failed_append_that_cannot_be_cut_off_is_never_built_on(tmp_path, monkeypatch, then):
    b = FileBackend(tmp_path)
    b.load()
    b.commit([rec("a", 1)], [], 1)

    def fail(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(filestore.os, "fdatasync", fail)
    monkeypatch.setattr(filestore.os, "ftruncate", fail)
    with pytest.raises(OSError):
        b.commit([rec("failed", 2)], [key("a")], 2)
    monkeypatch.undo()
    assert len(journal_lines(tmp_path)) == 2  # the failed record is still in the file
    if then == "commit":
        # same resource version as the failed one: appended, load could not tell them apart, so
        # the backend writes a snapshot (which supersedes the journal) instead
        b.commit([rec("b", 2)], [], 2)
        assert journal_lines(tmp_path) == []
        assert loaded(crash_image(tmp_path)) == (2, {"a": "v", "b": "v"})
        b.commit([rec("c", 3)], [], 3)  # and appends again after that
        assert len(journal_lines(tmp_path)) == 1
        b.close()
        assert loaded(tmp_path) == (3, {"a": "v", "b": "v", "c": "v"})
    else:
        b.close()  # writes the state it has, without the failed change set
        assert journal_lines(tmp_path) == []
        assert loaded(tmp_path) == (1, {"a": "v"})


def test_a_failed_snapshot_is_never_built_on(tmp_path, monkeypatch):
    b = FileBackend(tmp_path, compact_bytes=0)
    b.load()
    b.commit([rec("a", 1)], [], 1)

    def fail(directory):
        raise OSError(5, "Input/output error")

    # the new snapshot is renamed into place, but making that durable fails: the commit fails
    monkeypatch.setattr(filestore, "fsync_dir", fail)
    with pytest.raises(OSError):
        b.commit([rec("failed", 2)], [], 2)
    monkeypatch.undo()
    # the next change set reuses version 2; journaled after a snapshot at 2 it would be skipped
    b.compact_bytes = None
    b.commit([rec("b", 2)], [], 2)
    assert loaded(crash_image(tmp_path)) == (2, {"a": "v", "b": "v"})
    b.close()
