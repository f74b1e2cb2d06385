"""One access-log line per request, in Istio's default text format or as JSON.

Istio's default format (``meshConfig.accessLogFormat`` unset, ``accessLogEncoding: TEXT``)::

  [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
  %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
  "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
  %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
  "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
  %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
  %REQUESTED_SERVER_NAME% %ROUTE_NAME%

(on one line). Missing values print as ``-``. The JSON encoding uses Istio's key names for
the same fields. The proxy hands finished requests over in batches (``Proxy.record``: 16
requests or 100 ms), and each batch is formatted and written with one ``write``, off the
path of the requests themselves.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

_ISO_CACHE: list[Any] = [0, ""]


def _iso(ts: float) -> str:
    """RFC 3339 with milliseconds, UTC, as Envoy prints START_TIME; the second is cached."""
    sec = int(ts)
    if _ISO_CACHE[0] != sec:
        _ISO_CACHE[0] = sec
        _ISO_CACHE[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_ISO_CACHE[1]}.{int((ts - sec) * 1000):03d}Z"


def _d(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)


class AccessLogger:
    """Writes access-log lines to a file or stdout/stderr. The proxy hands it finished
    requests in batches (``Proxy.record``): each batch is formatted and written at once."""

    def __init__(self, path: str, fmt: str = "text") -> None:
        self.fmt = fmt
        self.path = path
        if path in ("/dev/stdout", "-"):
            self.fd = 1
            self._own = False
        elif path == "/dev/stderr":
            self.fd = 2
            self._own = False
        else:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._own = True
        self.buf: list[str] = []

    def log_batch(self, recs: list[Any]) -> None:
        """Format finished requests and write them (one write)."""
        fmt = self.format_json if self.fmt == "json" else self.format_text
        self.buf.extend(map(fmt, recs))
        self.flush()

    @staticmethod
    def format_text(r: Any) -> str:
        # "-" for an absent (None) or empty field, as _d() does; written out because this runs
        # for every request
        h = r.req_headers
        get = h.get
        ust = r.upstream_service_time
        conn = r.conn
        return (
            f'[{_iso(r.start_wall)}] "{r.method} {r.log_path} HTTP/{r.req.version}" {r.status} '
            f'{",".join(r.flags) if r.flags else "-"} {r.details or "-"} - "{r.transport_failure or "-"}" '
            f"{r.bytes_received} {r.bytes_sent} {r.duration_ms()} {'-' if ust is None else ust} "
            f'"{get("x-forwarded-for") or "-"}" "{get("user-agent") or "-"}" '
            f'"{get("x-request-id") or "-"}" "{r.log_authority or "-"}" "{r.upstream_host or "-"}" '
            f"{r.cluster_name or '-'} {r.upstream_local or '-'} {conn.local_address or '-'} "
            f"{conn.remote_address or '-'} - {r.route_name or '-'}\n"
        )

    @staticmethod
    def format_json(r: Any) -> str:
        h = r.req_headers
        obj = {
            "start_time": _iso(r.start_wall),
            "method": r.method,
            "path": r.log_path,
            "protocol": r.protocol,
            "response_code": r.status,
            "response_flags": r.flags_str(),
            "response_code_details": r.details,
            "connection_termination_details": None,
            "upstream_transport_failure_reason": r.transport_failure,
            "bytes_received": r.bytes_received,
            "bytes_sent": r.bytes_sent,
            "duration": r.duration_ms(),
            "upstream_service_time": r.upstream_service_time,
            "x_forwarded_for": h.get("x-forwarded-for"),
            "user_agent": h.get("user-agent"),
            "request_id": h.get("x-request-id"),
            "authority": r.log_authority,
            "upstream_host": r.upstream_host,
            "upstream_cluster": r.cluster_name,
            "upstream_local_address": r.upstream_local,
            "downstream_local_address": r.downstream_local,
            "downstream_remote_address": r.downstream_remote,
            "requested_server_name": None,
            "route_name": r.route_name,
        }
        return json.dumps(obj, separators=(",", ":")) + "\n"

    def flush(self) -> None:
        if not self.buf:
            return
        data = "".join(self.buf).encode("utf-8", "replace")
        self.buf.clear()
        try:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
        except BlockingIOError:
            pass  # a full pipe: drop rather than block the proxy
        except OSError:
            pass

    def close(self) -> None:
        self.flush()
        if self._own:
            os.close(self.fd)
