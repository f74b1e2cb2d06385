"""The control plane process: the config store, the per-generation view of it, the discovery
server that pushes snapshots to proxies, and the HTTP API the CLI talks to.

    store (FileBackend under the state directory)
      │ subscribe: every committed change
      ▼
    Generation(resource_version, ConfigView, Registry)   immutable, swapped in one assignment
      │ discovery.request_push()
      ▼
    DiscoveryServer ── compute(node) = translate(generation.view, generation.registry, node)

A generation is built once per change set (an ``apply`` of twenty documents emits twenty
events but builds one generation), and ``compute`` reads ``self.generation`` once, so one
push always computes against one consistent view of the configuration.

Everything runs on one asyncio loop; store writes (which ``fsync``) run in worker threads and
the store's callbacks hop back onto the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotfish.config import FileBackend, Store
from pilotfish.config.store import Event
from pilotfish.gcpolicy import LongLivedGC
from pilotfish.proxy import model

log = logging.getLogger("pilotfish.controlplane")

DEFAULT_API_ADDRESS = "127.0.0.1:15080"
DEFAULT_DISCOVERY_ADDRESS = "127.0.0.1:15010"


def default_state_dir() -> Path:
    """``$PILOTFISH_STATE``, else ``~/.pilotfish``."""
    env = os.environ.get("PILOTFISH_STATE")
    return Path(env).expanduser() if env else Path("~/.pilotfish").expanduser()


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``:port``, ``[::1]:port`` or ``host`` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    elif ":" in text:  # a bare IPv6 address
        host, port = text, ""
    else:
        host, port = text, ""
    if port and not port.isdigit():
        raise ValueError(f"invalid address {text!r}: port must be a number")
    p = int(port) if port else default_port
    if not 0 <= p <= 65535:
        raise ValueError(f"invalid address {text!r}: port out of range")
    return host or "127.0.0.1", p


def load_or_create_token(path: Path) -> str:
    """The API and discovery token: read from ``path``, or generated there (mode 0600)."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        try:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                print(
                    f"pilotfish controlplane: warning: {path} is readable by others "
                    f"(mode {mode:o}); chmod 600 it",
                    file=sys.stderr,
                )
        except OSError:
            pass
        return token
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + f".tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token


@dataclass(frozen=True)
class Generation:
    """One consistent, immutable view of the configuration, and what was built from it.

    ``view`` and ``registry`` are None when those parts are not available (or the build
    failed: ``error`` says why, and the previous generation stays in force).
    """

    resource_version: int
    view: Any = None
    registry: Any = None
    built_at: float = field(default_factory=time.time)
    error: str | None = None


def _optional(module: str, attr: str) -> Any | None:
    """``module.attr``, or None when that part of the control plane is not built."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None
        raise
    return getattr(mod, attr, None)


class ControlPlane:
    """The control plane: owns the store, the generation, discovery and the API."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        token: str,
        *,
        store: Store | None = None,
        debounce: float = 0.1,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.token = token
        self.debounce = debounce
        self.store = store if store is not None else Store(FileBackend(self.state_dir))
        self.generation = Generation(resource_version=-1)
        self.build_error: str | None = None
        self.discovery: Any = None
        self.api: Any = None
        self.started = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rebuild_pending = False
        self._sub = None
        self._view_cls = _optional("pilotfish.controlplane.view", "ConfigView")
        self._registry_cls = _optional("pilotfish.registry", "Registry")
        self._translate: Callable[..., model.ProxyConfig] | None = _optional(
            "pilotfish.controlplane.translate", "translate"
        )
        self.api_address: tuple[str, int] | None = None
        self.discovery_address: tuple[str, int] | None = None
        # the configuration's objects live long: keep full GC pauses off the apply -> ACK path
        self.gc = LongLivedGC()

    # ------------------------------------------------------------------ generations

    def rebuild(self, reason: str = "config change") -> bool:
        """Build a new generation from the store if it changed; push it. True if rebuilt."""
        self._rebuild_pending = False
        rv = self.store.resource_version
        if rv == self.generation.resource_version:
            return False
        objects = self.store.list()
        view = registry = None
        try:
            if self._view_cls is not None:
                view = self._view_cls.build(objects)
                if self._registry_cls is not None:
                    registry = self._registry_cls.build(view)
        except Exception as e:  # keep serving the previous generation
            self.build_error = f"resource version {rv}: {type(e).__name__}: {e}"
            log.error("cannot build the configuration view: %s", self.build_error)
            traceback.print_exc(file=sys.stderr)
            return False
        self.build_error = None
        old, self.generation = self.generation, Generation(rv, view, registry)
        for part in (old.view, old.registry):
            if part is not None:
                part.drop_caches()  # breaks the view <-> caches cycles: freed right away
        self.gc.settled()
        if self.discovery is not None:
            try:
                self.discovery.request_push(reason)
            except Exception:  # pragma: no cover - a discovery bug must not stop config
                traceback.print_exc(file=sys.stderr)
        return True

    def _on_store_event(self, ev: Event) -> None:
        # Called on the writer's thread, inside the store's lock: hop onto the loop, and
        # build once per change set however many objects it touched.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing
            loop.call_soon_threadsafe(self._schedule_rebuild, ev.resource_version)

    def _schedule_rebuild(self, rv: int) -> None:
        if self._rebuild_pending:
            return
        self._rebuild_pending = True
        assert self._loop is not None
        self._loop.call_soon(self.rebuild, f"config change (resource version {rv})")

    @property
    def can_translate(self) -> bool:
        return self._translate is not None and self._view_cls is not None and self._registry_cls is not None

    def compute(self, node: model.Node) -> model.ProxyConfig:
        """A proxy's configuration from the current generation (read once)."""
        gen = self.generation
        if self._translate is None or gen.view is None or gen.registry is None:
            raise RuntimeError("this control plane cannot compute proxy configurations yet (translate is not available)")
        return self._translate(gen.view, gen.registry, node)

    # ------------------------------------------------------------------ life cycle

    async def start(self, api: tuple[str, int], discovery: tuple[str, int] | None) -> None:
        from pilotfish.controlplane.api import ApiServer

        self._loop = asyncio.get_running_loop()
        self._sub = self.store.subscribe(self._on_store_event)
        self.rebuild("start")
        if discovery is not None:
            cls = _optional("pilotfish.controlplane.discovery", "DiscoveryServer")
            if cls is None:
                log.warning("discovery is not available in this build; proxies cannot connect")
            else:
                self.discovery = cls(self.compute, self.token, debounce=self.debounce)
                self.discovery.on_pushed = self.gc.settled  # translate's caches, the encoder's pieces
                bound = await self.discovery.start(discovery[0], discovery[1])
                port = bound if isinstance(bound, int) and bound else discovery[1]
                self.discovery_address = (discovery[0], port)
        self.api = ApiServer(self)
        await self.api.start(api[0], api[1])
        self.api_address = (api[0], self.api.port)
        self.gc.start(self._loop)

    async def close(self) -> None:
        self.gc.stop()
        if self.api is not None:
            self.api.close()
        if self.discovery is not None:
            with contextlib.suppress(Exception):
                await self.discovery.close()
        if self._sub is not None:
            self._sub.close()
        self.store.close()

    def status(self) -> dict[str, Any]:
        gen = self.generation
        return {
            "resourceVersion": self.store.resource_version,
            "objects": len(self.store),
            "generation": {
                "resourceVersion": gen.resource_version,
                "builtAt": gen.built_at,
                "error": self.build_error,
            },
            "translate": self.can_translate,
            "discovery": None
            if self.discovery_address is None
            else f"{self.discovery_address[0]}:{self.discovery_address[1]}",
            "stateDir": str(self.state_dir),
            "uptime": round(time.time() - self.started, 3),
            "loadIssues": [str(i) for i in self.store.load_issues],
        }


async def serve(
    state_dir: Path,
    token: str,
    api: tuple[str, int],
    discovery: tuple[str, int] | None,
    ready: Callable[[ControlPlane], None] | None = None,
) -> int:
    """Run a control plane until SIGTERM/SIGINT."""
    import signal

    cp = ControlPlane(state_dir, token)
    try:
        await cp.start(api, discovery)
    except BaseException:
        await cp.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(cp)
    try:
        await stop.wait()
    finally:
        await cp.close()
    return 0
