"""The control plane's HTTP API (default ``127.0.0.1:15080``), used by the CLI and dashboard.

Every path but ``/healthz`` needs ``Authorization: Bearer <token>`` (the token in
``<state>/token``); answers are JSON, errors included (``{"error": ..., "status": ...}``, and
``issues`` for refused applies). Resource paths follow the Kubernetes API's shape, with
kubectl's kind names (``vs``, ``virtualservices``, ``VirtualService``, ``svc``...)::

    GET    /healthz                                   liveness (no token)
    GET    /api/v1/version                            version, resource version, generation
    POST   /api/v1/apply[?dryRun=true]                apply documents, all or nothing
    POST   /api/v1/delete                             delete the objects documents name
    GET    /api/v1/{kind}                             list, all namespaces
    GET    /api/v1/namespaces/{ns}/{kind}             list, one namespace
    GET    /api/v1/namespaces/{ns}/{kind}/{name}      one object
    DELETE /api/v1/namespaces/{ns}/{kind}/{name}      delete one object
    GET    /api/v1/{kind}/{name}                      one cluster-scoped object (Namespace)
    DELETE /api/v1/{kind}/{name}                      delete one cluster-scoped object
    GET    /api/v1/proxies                            proxy status, every proxy
    GET    /api/v1/proxies/{proxy}                    one proxy's status
    GET    /api/v1/proxies/{proxy}/config             the last snapshot sent to it
    POST   /api/v1/proxies/{proxy}/explain            explain a request through it
    GET    /api/v1/analyze[?namespace=ns]             run the analyzers over the live config

``apply`` and ``delete`` take either a JSON body ``{"files": [{"name": "bookinfo.yaml",
"content": "<YAML or JSON text>"}]}`` (all files are one change set) or the raw YAML/JSON text
with ``?filename=NAME`` for messages. ``{proxy}`` is a proxy id, ``pod.namespace``, a pod name
or an unambiguous prefix of one.

The server is asyncio + httptools, one request per connection; request bodies are bounded
(16 MiB), request heads too (64 KiB), and a request must arrive within 30 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import httptools
import msgspec

from pilotfish.proxy import model

if TYPE_CHECKING:
    from pilotfish.controlplane.server import ControlPlane

log = logging.getLogger("pilotfish.controlplane.api")

MAX_BODY = 16 * 1024 * 1024
MAX_HEAD = 64 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024
REQUEST_TIMEOUT = 30.0
PREFIX = "/api/v1"
REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Payload Too Large", 415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}


class HttpError(Exception):
    """An error answer: status, message, and extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


# --------------------------------------------------------------------------- connection


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 request per connection, parsed by httptools."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self._name = b""
        self.head_size = 0
        self.body: list[bytes] = []
        self.size = 0
        self.done = False
        self.draining = False  # answered early (413); reading the rest of the body away
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()

    def _timeout(self) -> None:
        if not self.done:
            self.respond(408, {"error": "request timeout", "status": 408})
        elif self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.done:
            if self.draining:
                # discard the rest of a refused upload so the client can read our answer
                # (closing at once would reset the connection under it), within a bound
                self.size += len(data)
                if self.size > DRAIN_LIMIT and self.transport is not None:
                    self.transport.close()
                    return
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserError:
                    if self.transport is not None:
                        self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.respond(400, {"error": "upgrades are not supported", "status": 400})
        except httptools.HttpParserError as e:
            if not self.done:
                self.respond(400, {"error": f"bad request: {e}", "status": 400})

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        if self.done:
            return
        if name:
            self._name = name
        key = self._name.decode("latin-1").lower()
        v = value.decode("latin-1")
        if name:
            self.headers[key] = f"{self.headers[key]}, {v}" if key in self.headers else v
        else:  # a continuation of the previous value (httptools splits long values)
            self.headers[key] = self.headers.get(key, "") + v

    def on_headers_complete(self) -> None:
        if self.done:
            return
        cl = self.headers.get("content-length")
        if cl is not None and cl.isdigit() and int(cl) > MAX_BODY:
            self.respond(413, {"error": f"request body too large (limit {MAX_BODY} bytes)", "status": 413},
                         drain=True)
            return
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.done:
            return
        self.size += len(body)
        if self.size > MAX_BODY:
            self.respond(413, {"error": f"request body too large (limit {MAX_BODY} bytes)", "status": 413},
                         drain=True)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.done:
            if self.draining and self.transport is not None:
                self.transport.close()
            return
        if self.transport is not None:
            self.transport.pause_reading()
        method = self.parser.get_method().decode()
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            self.respond(400, {"error": "bad request: invalid URL", "status": 400})
            return
        path = url.path.decode("latin-1")  # segments are unquoted one by one in route()
        query = {k: v[-1] for k, v in parse_qs(url.query.decode("latin-1")).items()} if url.query else {}
        asyncio.get_running_loop().create_task(
            self.server.dispatch(self, method, path, query, self.headers, b"".join(self.body))
        )

    def _count(self, n: int) -> None:
        self.head_size += n
        if self.head_size > MAX_HEAD and not self.done:
            self.respond(431, {"error": f"request head too large (limit {MAX_HEAD} bytes)", "status": 431})

    def respond(self, status: int, payload: Any, extra_headers: list[tuple[str, str]] | None = None,
                drain: bool = False) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None and not drain:
            self.timer.cancel()
        t = self.transport
        if t is None or t.is_closing():
            return
        body = json.dumps(payload, indent=2, ensure_ascii=False, default=str).encode() + b"\n"
        head = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
            "cache-control: no-store",
        ]
        for k, v in extra_headers or []:
            head.append(f"{k}: {v}")
        t.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        if drain:
            self.draining = True
            self.size = 0
        else:
            t.close()


# --------------------------------------------------------------------------- the server


class ApiServer:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), host, port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(token.strip().encode(), self.cp.token.encode())

    async def dispatch(
        self, c: _Conn, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> None:
        started = time.monotonic()
        status = 500
        try:
            if path in ("/healthz", "/readyz"):
                status, payload = 200, {"status": "ok"}
            elif not self.authorized(headers):
                raise HttpError(401, "unauthorized: send 'Authorization: Bearer <token>' (the token is in <state>/token)")
            else:
                status, payload = await self.route(method, path, query, headers, body)
        except HttpError as e:
            status, payload = e.status, {"error": e.message, "status": e.status, **e.extra}
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            status, payload = 500, {"error": f"internal error: {type(e).__name__}: {e}", "status": 500}
        extra = [("www-authenticate", 'Bearer realm="pilotfish"')] if status == 401 else None
        c.respond(status, payload, extra)
        log.debug("%s %s -> %d (%.1f ms)", method, path, status, (time.monotonic() - started) * 1000)

    # ------------------------------------------------------------------ routing

    async def route(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            raise HttpError(404, f"no such path {path!r}; the API is under {PREFIX}/")
        parts = [unquote(p) for p in path[len(PREFIX) :].split("/") if p]
        if not parts:
            raise HttpError(404, "see /api/v1/version, /api/v1/apply, /api/v1/{kind}, /api/v1/proxies")
        head = parts[0]
        if head == "version" and len(parts) == 1:
            _allow(method, "GET")
            from pilotfish import __version__

            return 200, {"version": __version__, **self.cp.status()}
        if head == "apply" and len(parts) == 1:
            _allow(method, "POST")
            return await self.apply(query, headers, body)
        if head == "delete" and len(parts) == 1:
            _allow(method, "POST")
            return await self.delete_documents(query, headers, body)
        if head == "analyze" and len(parts) == 1:
            _allow(method, "GET", "POST")
            return await self.analyze(query)
        if head == "proxies":
            return await self.proxies(method, parts[1:], body)
        # resources
        if head == "namespaces" and len(parts) >= 3:
            ns = parts[1]
            if len(parts) == 3:
                _allow(method, "GET")
                return self.list_objects(parts[2], ns)
            if len(parts) == 4:
                _allow(method, "GET", "DELETE")
                if method == "DELETE":
                    return await self.delete_object(parts[2], ns, parts[3])
                return self.get_object(parts[2], ns, parts[3])
            raise HttpError(404, f"no such path {path!r}")
        if len(parts) == 1:
            _allow(method, "GET")
            return self.list_objects(parts[0], query.get("namespace"))
        if len(parts) == 2:
            _allow(method, "GET", "DELETE")
            info = _kind(parts[0])
            ns = None
            if info.namespaced:
                ns = query.get("namespace")
                if not ns:
                    raise HttpError(
                        400,
                        f"{info.resource} is namespaced: use {PREFIX}/namespaces/NAMESPACE/{info.plural}/{parts[1]}",
                    )
            if method == "DELETE":
                return await self.delete_object(parts[0], ns, parts[1])
            return self.get_object(parts[0], ns, parts[1])
        raise HttpError(404, f"no such path {path!r}")

    # ------------------------------------------------------------------ resources

    def list_objects(self, kind: str, namespace: str | None) -> tuple[int, Any]:
        info = _kind(kind)
        objs = self.cp.store.list(info, namespace if info.namespaced else None)
        return 200, {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": str(self.cp.store.resource_version)},
            "resource": _resource_info(info),
            "items": [so.data for so in objs],
            "sources": [_source(so) for so in objs],
        }

    def get_object(self, kind: str, namespace: str | None, name: str) -> tuple[int, Any]:
        info = _kind(kind)
        so = self.cp.store.get(info, namespace, name)
        if so is None:
            raise HttpError(404, f'{info.plural}{"." + info.group if info.group else ""} "{name}" not found',
                            reason="NotFound")
        return 200, {"object": so.data, "source": _source(so), "resource": _resource_info(info)}

    async def delete_object(self, kind: str, namespace: str | None, name: str) -> tuple[int, Any]:
        from pilotfish.config import NotFound

        info = _kind(kind)
        try:
            so = await asyncio.to_thread(self.cp.store.delete, info, namespace, name)
        except NotFound:
            raise HttpError(404, f'{info.plural}{"." + info.group if info.group else ""} "{name}" not found',
                            reason="NotFound") from None
        except OSError as e:
            raise HttpError(500, f"cannot store the change: {e}") from None
        return 200, {"results": [_result_row(so.key, "deleted")], "resourceVersion": self.cp.store.resource_version}

    # ------------------------------------------------------------------ apply / delete -f

    def _documents(self, query: dict[str, str], headers: dict[str, str], body: bytes) -> list[Any]:
        from pilotfish.api.loader import LoadError, load_text

        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "the body is not UTF-8 text") from None
        files: list[tuple[str, str]]
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json" and text.lstrip().startswith("{"):
            try:
                doc = json.loads(text)
            except ValueError as e:
                raise HttpError(400, f"invalid JSON body: {e}") from None
            if isinstance(doc, dict) and "files" in doc:
                raw = doc["files"]
                if not isinstance(raw, list) or not all(
                    isinstance(f, dict) and isinstance(f.get("content"), str) for f in raw
                ):
                    raise HttpError(400, 'files must be a list of {"name": ..., "content": "..."}')
                files = [(str(f.get("name") or f"files[{i}]"), f["content"]) for i, f in enumerate(raw)]
            else:
                files = [(query.get("filename") or "request", text)]
        else:
            files = [(query.get("filename") or "request", text)]
        resources = []
        errors = []
        for name, content in files:
            try:
                resources.extend(load_text(content, name))
            except LoadError as e:
                errors.append({"text": f"error: {e}", "file": e.file, "line": e.line, "message": str(e)})
        if errors:
            raise HttpError(
                400,
                "cannot parse " + ", ".join(sorted({str(e["file"]) for e in errors})) + "; nothing changed",
                issues=errors,
            )
        return resources

    async def apply(self, query: dict[str, str], headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        from pilotfish.config import ApplyError

        resources = self._documents(query, headers, body)
        if not resources:
            raise HttpError(400, "no objects passed to apply")
        dry = query.get("dryRun", "").lower() in ("1", "true", "all", "server")
        try:
            results = await asyncio.to_thread(self.cp.store.apply, resources, dry_run=dry)
        except ApplyError as e:
            errs = e.errors
            n = len(errs)
            raise HttpError(
                400,
                f"apply refused, nothing changed: {n} error{'s' if n != 1 else ''}",
                issues=[_issue(i) for i in e.issues],
            ) from None
        except OSError as e:
            raise HttpError(500, f"cannot store the change (nothing changed): {e}") from None
        rows = []
        for r in results:
            if r.key is None:
                row = {"action": r.action, "origin": r.origin}
            else:
                row = _result_row(r.key, r.action)
                row["origin"] = r.origin
            row["warnings"] = [str(w) for w in r.warnings]
            rows.append(row)
        return 200, {"results": rows, "dryRun": dry, "resourceVersion": self.cp.store.resource_version}

    async def delete_documents(self, query: dict[str, str], headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        from pilotfish.api.kinds import lookup
        from pilotfish.config.store import ObjectKey

        resources = self._documents(query, headers, body)
        if not resources:
            raise HttpError(400, "no objects passed to delete")
        store = self.cp.store
        rows: list[dict[str, Any]] = []
        present = []
        for res in resources:
            info = lookup(res.group, res.kind)
            if info is None or info.model is None:
                rows.append({"action": "skipped", "origin": res.origin,
                             "warnings": [f"{res.kind or 'document'} {res.name}: not a kind Pilotfish stores"]})
                continue
            ns = (res.namespace or store.default_namespace) if info.namespaced else None
            key = ObjectKey(info.group, info.kind, ns, res.name)
            if store.get(info, ns, res.name) is None:
                rows.append({**_result_row(key, "not found"), "origin": res.origin})
            else:
                present.append(res)
                rows.append({**_result_row(key, "deleted"), "origin": res.origin})
        try:
            await asyncio.to_thread(store.delete_resources, present)
        except OSError as e:
            raise HttpError(500, f"cannot store the change (nothing changed): {e}") from None
        return 200, {"results": rows, "resourceVersion": store.resource_version}

    # ------------------------------------------------------------------ analyze

    async def analyze(self, query: dict[str, str]) -> tuple[int, Any]:
        from pilotfish.analyze import analyze

        ns = query.get("namespace") or None
        objects = self.cp.store.list()
        result = await asyncio.to_thread(
            analyze, objects, namespace=ns, workloads_known=True, services_known=True
        )
        return 200, {
            "messages": [{**m.to_dict(), "text": str(m)} for m in result.messages],
            "executed": result.executed,
            "skipped": result.skipped,
            "resourceVersion": self.cp.store.resource_version,
        }

    # ------------------------------------------------------------------ proxies

    def _statuses(self) -> list[dict[str, Any]]:
        d = self.cp.discovery
        if d is None:
            return []
        return [proxy_status_dict(s) for s in d.statuses()]

    def find_proxy(self, ref: str) -> dict[str, Any]:
        rows = self._statuses()
        if self.cp.discovery is None:
            raise HttpError(503, "discovery is not running in this control plane: no proxies")
        for pred in (
            lambda r: r["id"] == ref,
            lambda r: f"{r['name']}.{r['namespace']}" == ref,
            lambda r: r["name"] == ref,
            lambda r: r["name"].startswith(ref) or f"{r['name']}.{r['namespace']}".startswith(ref),
        ):
            found = [r for r in rows if pred(r)]
            connected = [r for r in found if r.get("connected")]
            if len(found) > 1 and len(connected) == 1:
                found = connected
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise HttpError(
                    409,
                    f"{ref!r} names {len(found)} proxies: "
                    + ", ".join(f"{r['name']}.{r['namespace']}" for r in found)
                    + "; use POD.NAMESPACE or the proxy id",
                    candidates=[f"{r['name']}.{r['namespace']}" for r in found],
                )
        known = ", ".join(f"{r['name']}.{r['namespace']}" for r in rows) or "none"
        raise HttpError(404, f"no proxy {ref!r} is known to the control plane (proxies: {known})",
                        reason="NotFound")

    def _last_sent(self, row: dict[str, Any]) -> model.ProxyConfig:
        cfg = self.cp.discovery.last_sent(row["id"])
        if cfg is None:
            raise HttpError(
                404,
                f"no configuration has been sent to {row['name']}.{row['namespace']} yet"
                + ("" if row.get("connected") else " (it is not connected)"),
            )
        return cfg

    async def proxies(self, method: str, rest: list[str], body: bytes) -> tuple[int, Any]:
        if not rest:
            _allow(method, "GET")
            return 200, {"proxies": self._statuses(), "discovery": self.cp.discovery is not None}
        row = self.find_proxy(rest[0])
        if len(rest) == 1:
            _allow(method, "GET")
            return 200, {"proxy": row}
        if len(rest) == 2 and rest[1] == "config":
            _allow(method, "GET")
            cfg = self._last_sent(row)
            return 200, {"proxy": row, "config": model.to_builtins(cfg)}
        if len(rest) == 2 and rest[1] == "explain":
            _allow(method, "POST")
            return 200, self.explain(row, body)
        raise HttpError(404, "proxy paths: /proxies/{proxy}, /proxies/{proxy}/config, /proxies/{proxy}/explain")

    def explain(self, row: dict[str, Any], body: bytes) -> dict[str, Any]:
        from pilotfish.controlplane.explain import ExplainError, explain

        try:
            req = json.loads(body or b"{}")
        except ValueError as e:
            raise HttpError(400, f"invalid JSON body: {e}") from None
        if not isinstance(req, dict) or not isinstance(req.get("url"), str):
            raise HttpError(400, 'body must be {"method": "GET", "url": "http://host:port/path", "headers": {...}}')
        headers = req.get("headers") or {}
        if isinstance(headers, list):
            headers = [tuple(h) if isinstance(h, list) else h for h in headers]
        cfg = self._last_sent(row)
        try:
            result = explain(
                cfg,
                str(req.get("method") or "GET"),
                req["url"],
                headers,
                direction=req.get("direction"),
                proxy=f"{row['name']}.{row['namespace']}",
            )
        except (ExplainError, ValueError, TypeError) as e:
            raise HttpError(400, str(e)) from None
        state = row.get("state")
        if state == "NACKED":
            result["notes"].insert(0, (
                f"the proxy REJECTED version {cfg.version} ({row.get('nack')}); it is still running "
                f"version {row.get('acked_version') or '(none)'}, so live traffic may differ from this "
                "explanation of the rejected version"
            ))
        elif state == "STALE" or not row.get("connected", True):
            result["notes"].insert(0, (
                f"version {cfg.version} was sent but not acknowledged yet"
                + ("" if row.get("connected", True) else " (the proxy is disconnected)")
                + f"; the proxy may still be running version {row.get('acked_version') or '(none)'}"
            ))
        return result


# --------------------------------------------------------------------------- helpers


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HttpError(405, f"method {method} not allowed here (use {', '.join(allowed)})")


def _kind(name: str) -> Any:
    from pilotfish.api.kinds import resolve

    try:
        return resolve(name)
    except KeyError:
        raise HttpError(404, f'the server doesn\'t have a resource type "{name}"', reason="NotFound") from None


def _resource_info(info: Any) -> dict[str, Any]:
    return {
        "kind": info.kind,
        "group": info.group,
        "plural": info.plural,
        "resource": info.resource,
        "namespaced": info.namespaced,
    }


def _source(so: Any) -> str | None:
    if so.file and so.line:
        return f"{so.file}:{so.line}"
    return so.file


def _result_row(key: Any, action: str) -> dict[str, Any]:
    return {
        "action": action,
        "kind": key.kind,
        "group": key.group,
        "resource": key.resource,
        "namespace": key.namespace,
        "name": key.name,
    }


def _issue(i: Any) -> dict[str, Any]:
    return {
        "level": i.level,
        "kind": i.kind,
        "namespace": i.namespace,
        "name": i.name,
        "path": i.path,
        "message": i.message,
        "file": i.file,
        "line": i.line,
        "code": i.code,
        "text": str(i),
    }


def _builtins(x: Any) -> Any:
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, dict):
        return {str(k): _builtins(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_builtins(v) for v in x]
    if isinstance(x, msgspec.Struct):  # every field, defaults included
        return {f: _builtins(getattr(x, f)) for f in x.__struct_fields__}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _builtins(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if hasattr(x, "value") and hasattr(x, "name") and type(x).__module__ != "builtins":  # enums
        return _builtins(x.value)
    return str(x)


def proxy_status_dict(s: Any) -> dict[str, Any]:
    """A discovery ProxyStatus as JSON, with the fields the CLI relies on always present."""
    d = _builtins(s)
    if not isinstance(d, dict):
        d = {"id": str(s)}
    node = d.get("node") or {}
    pid = d.get("proxy_id") or d.get("id") or node.get("id") or ""
    out = dict(d)
    out["id"] = pid
    out["name"] = node.get("name") or pid
    out["namespace"] = node.get("namespace") or "default"
    out["role"] = node.get("role") or "sidecar"
    out["connected"] = bool(d.get("connected", True))
    out["state"] = str(d.get("state") or "STALE")
    out["sent_version"] = d.get("sent_version")
    out["acked_version"] = d.get("acked_version")
    nack = d.get("nack")
    out["nack"] = nack if nack else None
    out.setdefault("cluster", d.get("cluster") or "local")
    return out
