"""The request and response objects that flow through the stages of the proxy.

Header names are lowercase ``str`` (the codec decodes them as latin-1), as Envoy's HTTP/1
codec emits them. Request headers are a plain dict (repeated headers joined with ``", "``);
response headers are a list of pairs, because ``set-cookie`` must not be joined.
"""

from __future__ import annotations

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    206: "Partial Content", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
    413: "Payload Too Large", 414: "URI Too Long", 418: "I'm a teapot", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()
    return line


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


# Envoy's response flags (the short form used in access logs).
NR = "NR"  # no route configured
UH = "UH"  # no healthy upstream host
UF = "UF"  # upstream connection failure
UO = "UO"  # upstream overflow (circuit breaking)
URX = "URX"  # upstream retry limit exceeded (or retries exhausted)
UT = "UT"  # upstream request timeout
UC = "UC"  # upstream connection termination
UPE = "UPE"  # upstream protocol error (the upstream's response was not valid HTTP)
DC = "DC"  # downstream connection termination
DI = "DI"  # the request was delayed by fault injection
FI = "FI"  # the request was aborted by fault injection
LR = "LR"  # connection local reset
UR = "UR"  # upstream remote reset (not used by HTTP/1 here)
RL = "RL"  # rate limited (reserved)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


_NAMES: dict[bytes, str] = {}  # raw header name -> lowercase str, for names seen before


def header_name(raw: bytes) -> str:
    """A header name as the proxy keys it: lowercase ``str`` (decoded as latin-1). The parsers
    look names up in ``_NAMES`` first; this fills it (up to a bound: names are client input)."""
    n = raw.decode("latin-1").lower()
    if len(_NAMES) < 4096:
        _NAMES[raw] = n
    return n


def after_upgrade(e: Exception, data: bytes) -> bytes:
    """The bytes of ``data`` after the head httptools stopped at (``HttpParserUpgrade``
    carries that offset)."""
    offset = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
    return data[offset:]


class Request:
    """A parsed downstream request, as the filters and router see it."""

    __slots__ = (
        "method",
        "path",
        "query",
        "headers",
        "version",
        "authority",
        "scheme",
        "source_ip",
        "source_port",
        "dest_ip",
        "dest_port",
        "_query_params",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        version: str = "1.1",
        scheme: str = "http",
        source_ip: str = "",
        source_port: int = 0,
        dest_ip: str = "",
        dest_port: int = 0,
    ) -> None:
        self.method = method
        q = target.find("?")
        if q >= 0:
            self.path = target[:q]
            self.query = target[q + 1 :]
        else:
            self.path = target
            self.query = ""
        self.headers = headers
        self.version = version
        self.authority = headers.get("host", "")
        self.scheme = scheme
        self.source_ip = source_ip
        self.source_port = source_port
        self.dest_ip = dest_ip
        self.dest_port = dest_port
        self._query_params: dict[str, str] | None = None

    @property
    def target(self) -> str:
        """The request-target as it will be sent upstream (path and query)."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def host(self) -> str:
        """The authority without its port."""
        a = self.authority
        if a.startswith("["):
            end = a.find("]")
            return a[: end + 1] if end > 0 else a
        c = a.rfind(":")
        return a[:c] if c >= 0 else a

    @property
    def query_params(self) -> dict[str, str]:
        """The query parameters, first value wins, %-decoding applied as Envoy does."""
        qp = self._query_params
        if qp is None:
            from urllib.parse import unquote_plus

            qp = {}
            if self.query:
                for part in self.query.split("&"):
                    if not part:
                        continue
                    k, _, v = part.partition("=")
                    k = unquote_plus(k)
                    if k not in qp:
                        qp[k] = unquote_plus(v)
            self._query_params = qp
        return qp

    def set_target(self, target: str) -> None:
        q = target.find("?")
        if q >= 0:
            self.path, self.query = target[:q], target[q + 1 :]
        else:
            self.path, self.query = target, ""
        self._query_params = None

    def set_authority(self, authority: str) -> None:
        self.authority = authority
        self.headers["host"] = authority


class LocalReply:
    """An answer produced by the proxy itself (a filter, the router, or an error)."""

    __slots__ = ("status", "body", "headers", "flag", "details")

    def __init__(
        self,
        status: int,
        body: str | bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        flag: str | None = None,
        details: str | None = None,
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = headers or []
        self.flag = flag
        self.details = details

    def __repr__(self) -> str:
        return f"LocalReply({self.status}, flag={self.flag})"
