"""The CLI's client for the control plane's HTTP API (``pilotfish.controlplane.api``).

Where to connect and with which token, first found wins:

- address: ``--api``, ``$PILOTFISH_API``, ``127.0.0.1:15080``;
- token: ``--token``, ``$PILOTFISH_TOKEN``, the file ``<state>/token`` where the state
  directory is ``--state-dir``, ``$PILOTFISH_STATE`` or ``~/.pilotfish``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_API = "127.0.0.1:15080"
TIMEOUT = 60.0


class ApiError(Exception):
    """An error answer from the API (``status`` 0: the API could not be reached)."""

    def __init__(self, status: int, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.payload = payload or {}

    @property
    def issues(self) -> list[dict[str, Any]]:
        return list(self.payload.get("issues") or [])


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("control plane connection")
    g.add_argument("--api", metavar="HOST:PORT", help=f"the control plane's API (default: $PILOTFISH_API or {DEFAULT_API})")
    g.add_argument("--token", help="API token (default: $PILOTFISH_TOKEN, else <state>/token)")
    g.add_argument("--state-dir", metavar="DIR", help="the control plane's state directory, to read its token from "
                   "(default: $PILOTFISH_STATE or ~/.pilotfish)")


def state_dir(args: argparse.Namespace | None = None) -> Path:
    d = getattr(args, "state_dir", None) or os.environ.get("PILOTFISH_STATE") or "~/.pilotfish"
    return Path(d).expanduser()


def resolve_token(args: argparse.Namespace | None = None) -> str | None:
    tok = getattr(args, "token", None) or os.environ.get("PILOTFISH_TOKEN")
    if tok:
        return tok.strip()
    path = state_dir(args) / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def resolve_address(args: argparse.Namespace | None = None) -> tuple[str, int]:
    text = getattr(args, "api", None) or os.environ.get("PILOTFISH_API") or DEFAULT_API
    text = text.strip()
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "15080"
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, "15080"
    if not port.isdigit():
        raise ApiError(0, f"invalid API address {text!r} (expected HOST:PORT)")
    return host or "127.0.0.1", int(port)


class Client:
    def __init__(self, host: str, port: int, token: str | None, timeout: float = TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.timeout = timeout
        self.error: ApiError | None = None  # raised by every call (e.g. a bad --api)

    @classmethod
    def from_args(cls, args: argparse.Namespace | None = None) -> Client:
        try:
            host, port = resolve_address(args)
        except ApiError as e:
            c = cls("", 0, None)
            c.error = e
            return c
        return cls(host, port, resolve_token(args))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One API call -> the decoded JSON answer; raises :class:`ApiError`."""
        if self.error is not None:
            raise self.error
        import http.client  # here, not at the top: every pilotfish command builds this parser
        url = "/api/v1" + path
        q = {k: v for k, v in (query or {}).items() if v is not None and v is not False}
        if q:
            url += "?" + urlencode(q)
        data: bytes | None = None
        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["content-type"] = content_type
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, url, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except (ConnectionRefusedError, socket.gaierror, OSError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise ApiError(
                0,
                f"cannot reach the control plane at {self.address}: {reason} "
                "(is 'pilotfish controlplane' running? set --api or PILOTFISH_API)",
            ) from None
        except http.client.HTTPException as e:
            raise ApiError(0, f"bad answer from the control plane at {self.address}: {e}") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"error": raw.decode("utf-8", "replace")[:500]}
        if status >= 400:
            msg = payload.get("error") if isinstance(payload, dict) else None
            if status == 401:
                where = "--token, PILOTFISH_TOKEN or " + str(state_dir() / "token")
                msg = f"unauthorized: the control plane refused the token ({'none found' if not self.token else 'wrong token'}; from {where})"
            raise ApiError(status, msg or f"HTTP {status}", payload if isinstance(payload, dict) else {})
        return payload if isinstance(payload, dict) else {"result": payload}

    # convenience ------------------------------------------------------------------------

    def apply(self, files: list[tuple[str, str]], dry_run: bool = False) -> dict[str, Any]:
        body = {"files": [{"name": n, "content": c} for n, c in files]}
        return self.request("POST", "/apply", body, {"dryRun": "true" if dry_run else None})

    def delete_documents(self, files: list[tuple[str, str]]) -> dict[str, Any]:
        body = {"files": [{"name": n, "content": c} for n, c in files]}
        return self.request("POST", "/delete", body)

    def delete(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        if namespace:
            return self.request("DELETE", f"/namespaces/{quote(namespace, '')}/{quote(kind, '')}/{quote(name, '')}")
        return self.request("DELETE", f"/{quote(kind, '')}/{quote(name, '')}")

    def list(self, kind: str, namespace: str | None) -> dict[str, Any]:
        if namespace:
            return self.request("GET", f"/namespaces/{quote(namespace, '')}/{quote(kind, '')}")
        return self.request("GET", f"/{quote(kind, '')}")

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        if namespace:
            return self.request("GET", f"/namespaces/{quote(namespace, '')}/{quote(kind, '')}/{quote(name, '')}")
        return self.request("GET", f"/{quote(kind, '')}/{quote(name, '')}")

    def proxies(self) -> dict[str, Any]:
        return self.request("GET", "/proxies")

    def proxy(self, ref: str) -> dict[str, Any]:
        return self.request("GET", f"/proxies/{quote(ref, '')}")

    def proxy_config(self, ref: str) -> dict[str, Any]:
        return self.request("GET", f"/proxies/{quote(ref, '')}/config")

    def explain(self, ref: str, method: str, url: str, headers: list[tuple[str, str]],
                direction: str | None = None) -> dict[str, Any]:
        body = {"method": method, "url": url, "headers": [list(h) for h in headers], "direction": direction}
        return self.request("POST", f"/proxies/{quote(ref, '')}/explain", body)

    def analyze(self, namespace: str | None = None) -> dict[str, Any]:
        return self.request("GET", "/analyze", query={"namespace": namespace})

    def version(self) -> dict[str, Any]:
        return self.request("GET", "/version")


def fail(e: ApiError, err: Any = None) -> int:
    """Print an API error the way kubectl does and return the exit code (1)."""
    err = err or sys.stderr
    if e.status == 404 and e.payload.get("reason") == "NotFound":
        print(f"Error from server (NotFound): {e.message}", file=err)
    else:
        print(f"Error: {e.message}", file=err)
    for i in e.issues:
        print(f"  {i.get('text') or i.get('message')}", file=err)
    return 1
