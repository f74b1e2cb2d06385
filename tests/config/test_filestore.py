"""The file backend: restarts keep the config; crashes never leave a half-written state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pilotfish.api.loader import load_text
from pilotfish.config import FileBackend, StateError, Store, filestore

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


def test_restart_keeps_the_config(tmp_path):
    s = Store(FileBackend(tmp_path))
    s.apply(docs(VS, NS))
    s.apply(docs(VS.replace("subset: v1", "subset: v2")))
    before = {o.key: (o.resource_version, o.generation, o.uid, o.created, o.data) for o in s.list()}
    s.close()
    assert (tmp_path / "config" / "store.json").is_file()

    s2 = Store(FileBackend(tmp_path))
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
    s3 = Store(FileBackend(tmp_path))
    assert [o.kind for o in s3.list()] == ["VirtualService"] and s3.resource_version == 5
    s3.close()


def test_leftover_temp_file_from_a_crash_is_ignored_and_removed(tmp_path):
    s = Store(FileBackend(tmp_path))
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
    s = Store(FileBackend(tmp_path))
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


def test_crash_during_the_write_keeps_the_previous_state(tmp_path, monkeypatch):
    s = Store(FileBackend(tmp_path))
    s.apply(docs(VS))
    state = (tmp_path / "config" / "store.json").read_bytes()

    def crash(fd):
        raise OSError(5, "simulated power loss before fsync")

    monkeypatch.setattr(filestore.os, "fsync", crash)
    with pytest.raises(OSError):
        s.apply(docs(NS))
    monkeypatch.undo()
    assert (tmp_path / "config" / "store.json").read_bytes() == state
    s.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pilotfish.api.loader import load_text
    from pilotfish.config import FileBackend, Store

    store = Store(FileBackend(sys.argv[1]))
    padding = "x" * 2000  # make each state file large enough that writes take a while
    i = 0
    while True:
        i += 1
        text = (
            "apiVersion: v1\\nkind: ConfigMap\\n"
            f"metadata: {{name: cm-{i % 50}, annotations: {{n: '{i}'}}}}\\n"
            f"data: {{pad: '{padding}', n: '{i}'}}\\n"
        )
        store.apply(load_text(text, "gen.yaml"))
        print(store.resource_version, flush=True)
    """
)


def test_killed_writer_leaves_the_last_good_state(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        committed = 0
        deadline = time.monotonic() + 20
        try:
            while committed < 40 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                committed = int(line)
        finally:
            proc.send_signal(signal.SIGKILL)  # no cleanup, no atexit: a crash at a random point
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert committed >= 40, "the writer did not get going"
        # the state file is always a complete, valid snapshot: never a torn write
        raw = (tmp_path / "config" / "store.json").read_bytes()
        snap = json.loads(raw)
        assert snap["format"] == filestore.FORMAT
        s = Store(FileBackend(tmp_path))
        # every commit the writer reported is there (it may have made one more before dying)
        assert s.resource_version >= committed
        assert s.load_issues == []
        objs = s.list("ConfigMap")
        assert objs and all(o.obj is not None for o in objs)
        assert max(o.resource_version for o in objs) == s.resource_version
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
