"""``pilotfish logs``: a pod's container output, as ``kubectl logs`` prints it.

    pilotfish logs productpage-v1-7d9f8c6b5c-x2k4p            # the app container
    pilotfish logs productpage-v1-7d9f8c6b5c-x2k4p -c istio-proxy -f   # the sidecar, access log included
    pilotfish logs deploy/reviews-v2 --tail 20
    pilotfish logs -n istio-system istio-ingressgateway      # a unique prefix is enough

The runtime (``pilotfish up``) appends each container's stdout and stderr to
``<state>/logs/<namespace>/<pod>/<container>.log``; this command reads those files, so it
runs on the machine of the mesh, with the same state directory (``--state-dir``,
``$PILOTFISH_STATE`` or ``~/.pilotfish``). Without ``-c``, a pod's only app container is
shown (the sidecar ``istio-proxy`` only when it is the pod's only container).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SIDECAR = "istio-proxy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", metavar="POD", help="pod name, an unambiguous prefix of one, or deploy/NAME")
    parser.add_argument("-c", "--container", help="container name (istio-proxy: the sidecar)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    parser.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    parser.add_argument("--tail", type=int, default=-1, metavar="N", help="only the last N lines")
    parser.add_argument("--state-dir", metavar="DIR", help="the mesh's state directory "
                        "(default: $PILOTFISH_STATE or ~/.pilotfish)")


class _Error(Exception):
    pass


def _state_dir(args: argparse.Namespace) -> Path:
    d = args.state_dir or os.environ.get("PILOTFISH_STATE") or "~/.pilotfish"
    return Path(d).expanduser()


def find_pod(root: Path, namespace: str, ref: str) -> Path:
    """The log directory of pod ``ref`` in ``namespace`` (exact name, ``deploy/NAME`` or
    ``deployment/NAME``, or an unambiguous prefix)."""
    nsdir = root / namespace
    pods = sorted(p.name for p in nsdir.iterdir() if p.is_dir()) if nsdir.is_dir() else []
    kind, sep, name = ref.partition("/")
    if sep and kind in ("deploy", "deployment", "deployments", "deployment.apps"):
        found = [p for p in pods if p.startswith(name + "-") and len(p) == len(name) + 17]
        if not found:
            raise _Error(f'Error from server (NotFound): deployments.apps "{name}" has no pods in namespace '
                         f'"{namespace}"')
        return nsdir / found[-1]
    if sep and kind in ("pod", "pods", "po"):
        ref = name
    elif sep:
        raise _Error(f"error: logs of {kind} objects are not supported: give a pod or deploy/NAME")
    if ref in pods:
        return nsdir / ref
    found = [p for p in pods if p.startswith(ref)]
    if len(found) == 1:
        return nsdir / found[0]
    if len(found) > 1:
        raise _Error(f"error: {ref!r} names {len(found)} pods: {', '.join(found)}")
    others = sorted(f"{d.name}/{p.name}" for d in root.iterdir() if d.is_dir() for p in d.iterdir()
                    if p.is_dir() and p.name.startswith(ref)) if root.is_dir() else []
    hint = f" (did you mean -n {others[0].split('/')[0]}?)" if others else ""
    raise _Error(f'Error from server (NotFound): pods "{ref}" not found in namespace "{namespace}"{hint}')


def pick_container(pod_dir: Path, container: str | None) -> Path:
    names = sorted(p.name[:-4] for p in pod_dir.glob("*.log"))
    if container:
        if container not in names:
            raise _Error(f"error: container {container} is not valid for pod {pod_dir.name}"
                         + (f", choose one of: [{' '.join(names)}]" if names else " (no output yet)"))
        return pod_dir / f"{container}.log"
    apps = [n for n in names if n != SIDECAR]
    if len(apps) == 1:
        return pod_dir / f"{apps[0]}.log"
    if not apps and SIDECAR in names:
        return pod_dir / f"{SIDECAR}.log"
    if not names:
        raise _Error(f"error: pod {pod_dir.name} has no output yet")
    raise _Error(f"error: a container name must be specified for pod {pod_dir.name}, choose one of: "
                 f"[{' '.join(names)}]")


def _tail_bytes(data: bytes, n: int) -> bytes:
    if n < 0:
        return data
    if n == 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:])


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    root = _state_dir(args) / "logs"
    try:
        pod_dir = find_pod(root, args.namespace, args.pod)
        path = pick_container(pod_dir, args.container)
    except _Error as e:
        print(str(e), file=err)
        return 1
    write = out.buffer.write if hasattr(out, "buffer") else (lambda b: out.write(b.decode("utf-8", "replace")))
    try:
        with open(path, "rb") as f:
            data = f.read()
            write(_tail_bytes(data, args.tail))
            out.flush()
            if not args.follow:
                return 0
            pos = f.tell()
            ino = os.fstat(f.fileno()).st_ino
            while True:
                chunk = f.read()
                if chunk:
                    write(chunk)
                    out.flush()
                    pos += len(chunk)
                    continue
                time.sleep(0.2)
                try:
                    stt = os.stat(path)
                except FileNotFoundError:
                    return 0  # the pod is gone
                if stt.st_ino != ino or stt.st_size < pos:  # replaced or truncated
                    return 0
    except FileNotFoundError:
        print(f"error: {path}: no such log", file=err)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
