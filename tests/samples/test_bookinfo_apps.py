"""The Bookinfo sample's four apps (samples/bookinfo/src), run as local processes without a mesh.

Each app listens on 127.0.0.1 with a port of its own choosing (PORT=0, read back from its
"listening on" line) and is pointed at its peers with the *_HOSTNAME / *_SERVICE_PORT variables.
Where a test needs to see what an app sends, or to make a peer slow or broken, the peer is a
``Recorder``: an in-process HTTP server that answers like the real service and keeps every
request's path and headers.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "samples" / "bookinfo" / "src"

DETAILS = {"id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback",
           "pages": 200, "publisher": "PublisherA", "language": "English",
           "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}
RATINGS = {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
TRACE_HEADERS = {
    "x-request-id": "req-1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE",
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    "x-b3-sampled": "1",
    "x-b3-flags": "0",
    "x-ot-span-context": "ot-1",
    "x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1",
    "grpc-trace-bin": "AAARf5bVyP6HTQ",
    "baggage": "userId=alice",
}
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


# --------------------------------------------------------------------------------------------
# helpers


class App:
    """One app as a child process; its stdout lines are collected in ``lines``."""

    def __init__(self, script: str, env: dict[str, str]) -> None:
        full = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
        full.update(PORT="0", BIND_ADDRESS="127.0.0.1", PYTHONUNBUFFERED="1")
        full.update(env)
        self.name = script
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self.proc = subprocess.Popen([sys.executable, str(SRC / script)], env=full, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(10) or not self.port:
            self.stop()
            pytest.fail(f"{script} did not start:\n{''.join(self.lines)}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"listening on \S+:(\d+)", line)
            if m and not self.port:
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()

    def log(self) -> str:
        return "".join(self.lines)

    def lines_with(self, text: str, timeout: float = 5.0) -> list[str]:
        """The lines containing ``text``, waiting for the first (a reader thread collects
        the child's output, so a line can land just after the response that caused it)."""
        end = time.monotonic() + timeout
        while True:
            seen = [line for line in self.lines if text in line]
            if seen or time.monotonic() > end:
                return seen
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Recorder:
    """A stand-in peer: answers /details/, /ratings/, /reviews/ like the real service (after
    ``delay`` seconds, with ``status``), and records (path, headers) of every request. As an
    HTTP proxy it sees absolute-form paths (http://details:9080/details/0)."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.requests: list[tuple[str, dict[str, str]]] = []
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                rec.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if rec.delay:
                    time.sleep(rec.delay)
                path = self.path.split("://", 1)[-1]
                if "/details/" in path:
                    body = DETAILS
                elif "/ratings/" in path:
                    body = RATINGS
                elif "/reviews/" in path:
                    body = {"id": "0", "podname": "recorder", "clustername": "null", "reviews": [
                        {"reviewer": "Reviewer1", "text": "t1", "rating": {"stars": 3, "color": "black"}}]}
                else:
                    body = {"error": "unknown"}
                data = json.dumps(body).encode()
                try:
                    self.send_response(rec.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller gave up

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def request(port: int, path: str, method: str = "GET", headers: dict | None = None,
            body: bytes | None = None, timeout: float = 15) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def peer(name: str, port: int) -> dict[str, str]:
    return {f"{name.upper()}_HOSTNAME": "127.0.0.1", f"{name.upper()}_SERVICE_PORT": str(port)}


def login(port: int, user: str = "jason") -> str:
    """Sign in; returns the Cookie header value to send."""
    status, headers, _ = request(port, "/login", "POST", body=f"username={user}".encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 302 and headers["location"] == "/productpage"
    return headers["set-cookie"].split(";", 1)[0]


@pytest.fixture(scope="module")
def launch():
    started: list = []

    def start(script: str, **env: str) -> App:
        app = App(script, env)
        started.append(app)
        return app

    def recorder(**kw) -> Recorder:
        rec = Recorder(**kw)
        started.append(rec)
        return rec

    start.recorder = recorder
    yield start
    for thing in started:  # signal every app first, then wait for each
        if isinstance(thing, App) and thing.proc.poll() is None:
            thing.proc.terminate()
    for thing in reversed(started):
        thing.stop()


@pytest.fixture(scope="module")
def mesh(launch):
    """The whole app: ratings, details, reviews v1-v3 and one productpage per reviews version."""
    ratings = launch("ratings.py")
    details = launch("details.py")
    out = {"ratings": ratings, "details": details}
    for v in ("v1", "v2", "v3"):
        out[f"reviews-{v}"] = launch("reviews.py", SERVICE_VERSION=v, **peer("ratings", ratings.port))
    for v in ("v1", "v2", "v3"):
        out[f"productpage-{v}"] = launch("productpage.py", **peer("details", details.port),
                                         **peer("reviews", out[f"reviews-{v}"].port),
                                         **peer("ratings", ratings.port))
    return out


def load_module(name: str):
    sys.path.insert(0, str(SRC))
    try:
        spec = importlib.util.spec_from_file_location(f"_bookinfo_{name}", SRC / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(SRC))


# --------------------------------------------------------------------------------------------
# each service alone


def test_details_ratings_and_health(mesh):
    status, _, body = request(mesh["details"].port, "/details/0")
    assert status == 200 and json.loads(body) == DETAILS
    assert request(mesh["details"].port, "/details/abc")[0] == 400
    status, _, body = request(mesh["ratings"].port, "/ratings/0")
    assert status == 200 and json.loads(body) == RATINGS
    for app, text in (("details", "Details"), ("ratings", "Ratings"), ("reviews-v1", "Reviews"),
                      ("productpage-v1", "Productpage")):
        status, _, body = request(mesh[app].port, "/health")
        assert status == 200 and json.loads(body) == {"status": f"{text} is healthy"}
    assert request(mesh["details"].port, "/nope")[0] == 404


@pytest.mark.parametrize("version,color", [("v1", None), ("v2", "black"), ("v3", "red")])
def test_reviews_json(mesh, version, color):
    status, _, body = request(mesh[f"reviews-{version}"].port, "/reviews/0")
    assert status == 200
    doc = json.loads(body)
    assert doc["id"] == "0" and doc["clustername"] == "null" and doc["podname"]
    assert [r["reviewer"] for r in doc["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert all(r["text"] for r in doc["reviews"])
    if color is None:
        assert all("rating" not in r for r in doc["reviews"])
    else:
        assert [r["rating"] for r in doc["reviews"]] == [
            {"stars": 5, "color": color}, {"stars": 4, "color": color}]


def test_reviews_v1_does_not_call_ratings(launch):
    ratings = launch.recorder()
    reviews = launch("reviews.py", SERVICE_VERSION="v1", **peer("ratings", ratings.port))
    assert request(reviews.port, "/reviews/0")[0] == 200
    assert ratings.requests == []


def test_default_timeouts(monkeypatch):
    for var in ("RATINGS_TIMEOUT", "DETAILS_TIMEOUT", "REVIEWS_TIMEOUT", "ENABLE_RATINGS",
                "STAR_COLOR", "SERVICES_DOMAIN", "RATINGS_HOSTNAME", "RATINGS_SERVICE_PORT",
                "DETAILS_HOSTNAME", "REVIEWS_HOSTNAME", "DETAILS_SERVICE_PORT", "REVIEWS_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    reviews = load_module("reviews")
    reviews.configure("v2")
    assert reviews.Settings.ratings_timeout == 10.0 and reviews.Settings.star_color == "black"
    reviews.configure("v3")
    assert reviews.Settings.ratings_timeout == 2.5 and reviews.Settings.star_color == "red"
    reviews.configure("v1")
    assert not reviews.Settings.ratings_enabled
    assert reviews.Settings.ratings_url == "http://ratings:9080"
    page = load_module("productpage")
    page.configure()
    assert (page.Peers.details_timeout, page.Peers.reviews_timeout) == (3.0, 3.0)
    assert (page.Peers.details, page.Peers.reviews) == ("http://details:9080", "http://reviews:9080")


# --------------------------------------------------------------------------------------------
# the product page


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_productpage(mesh, version):
    status, headers, page = request(mesh[f"productpage-{version}"].port, "/productpage")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "<title>Simple Bookstore App</title>" in page
    assert re.search(r"<h3[^>]*>The Comedy of Errors</h3>", page)
    assert "William Shakespeare" in page
    for text in ("paperback", "PublisherA", "English", "1234567890", "123-1234567890"):
        assert text in page
    assert "Reviewer1" in page and "Reviewer2" in page
    assert "Error fetching" not in page and "Sign in" in page
    full = page.count('class="glyphicon glyphicon-star text-')
    empty = page.count('class="glyphicon glyphicon-star-empty text-')
    if version == "v1":
        assert "glyphicon" not in page
    else:
        color = {"v2": "black", "v3": "red"}[version]
        other = {"v2": "red", "v3": "black"}[version]
        assert (full, empty) == (9, 1)
        assert page.count(f'<span class="glyphicon glyphicon-star text-{color}-500"></span>') == 9
        assert f"text-{other}-500\"" not in page


def test_static_and_api(mesh):
    port = mesh["productpage-v2"].port
    status, headers, css = request(port, "/static/bookinfo.css")
    assert status == 200 and headers["content-type"].startswith("text/css") and ".text-red-500" in css
    status, _, body = request(port, "/api/v1/products")
    assert status == 200 and json.loads(body)[0]["title"] == "The Comedy of Errors"
    status, _, body = request(port, "/api/v1/products/0")
    assert status == 200 and json.loads(body) == DETAILS
    status, _, body = request(port, "/api/v1/products/0/reviews")
    assert status == 200 and json.loads(body)["reviews"][0]["rating"] == {"stars": 5, "color": "black"}
    status, _, body = request(port, "/api/v1/products/0/ratings")
    assert status == 200 and json.loads(body) == RATINGS
    assert request(port, "/")[0] == 200
    assert request(port, "/api/v1/products/0/nope")[0] == 404


def test_keep_alive(mesh):
    conn = http.client.HTTPConnection("127.0.0.1", mesh["productpage-v3"].port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/productpage")
            resp = conn.getresponse()
            assert resp.status == 200 and "The Comedy of Errors" in resp.read().decode()
            assert not resp.will_close
    finally:
        conn.close()


def test_login_sends_end_user_to_ratings(mesh):
    port = mesh["productpage-v2"].port
    cookie = login(port)
    assert cookie == "session=jason"
    rid = uuid.uuid4().hex
    status, _, page = request(port, "/productpage", headers={"Cookie": cookie, "x-request-id": rid})
    assert status == 200 and "Signed in as jason" in page and "Sign out" in page
    seen = mesh["ratings"].lines_with(rid)
    assert seen and all("end-user=jason" in line for line in seen)
    # without the session cookie no end-user is sent, and a client cannot forge one
    rid = uuid.uuid4().hex
    request(port, "/productpage", headers={"x-request-id": rid, "end-user": "mallory"})
    seen = mesh["ratings"].lines_with(rid)
    assert seen and not any("end-user=" in line for line in seen)
    # sign out clears the cookie
    status, headers, _ = request(port, "/logout", headers={"Cookie": cookie})
    assert status == 302 and headers["location"] == "/productpage"
    assert re.match(r"session=;.*Max-Age=0", headers["set-cookie"])


def test_login_multipart_form(mesh):
    port = mesh["productpage-v1"].port
    boundary = "----bookinfo"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\n"
            f"jason\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"passwd\"\r\n\r\n"
            f"x\r\n--{boundary}--\r\n").encode()
    status, headers, _ = request(port, "/login", "POST", body=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 302 and headers["set-cookie"].startswith("session=jason;")


def test_tracing_headers_forwarded(launch):
    details = launch.recorder()
    ratings = launch.recorder()
    reviews = launch("reviews.py", SERVICE_VERSION="v2", **peer("ratings", ratings.port))
    page = launch("productpage.py", **peer("details", details.port), **peer("reviews", reviews.port))
    cookie = login(page.port)
    status, _, body = request(page.port, "/productpage", headers={**TRACE_HEADERS, "Cookie": cookie})
    assert status == 200 and "PublisherA" in body
    for rec in (details, ratings):
        assert len(rec.requests) == 1
        _, got = rec.requests[0]
        for name, value in TRACE_HEADERS.items():
            assert got.get(name) == value, (name, got)
        assert got["end-user"] == "jason"


def test_explicit_proxy_mode(launch):
    proxy = launch.recorder()
    no_proxy = "details,reviews,ratings,localhost,127.0.0.1"
    page = launch("productpage.py", HTTP_PROXY=f"http://127.0.0.1:{proxy.port}", NO_PROXY=no_proxy,
                  no_proxy=no_proxy)
    reviews = launch("reviews.py", SERVICE_VERSION="v3", http_proxy=f"127.0.0.1:{proxy.port}",
                     NO_PROXY=no_proxy)
    status, _, body = request(page.port, "/productpage")
    assert status == 200 and "PublisherA" in body and "Reviewer1" in body
    assert request(reviews.port, "/reviews/0")[0] == 200
    paths = [(p, h["host"]) for p, h in proxy.requests]
    assert paths == [("http://details:9080/details/0", "details:9080"),
                     ("http://reviews:9080/reviews/0", "reviews:9080"),
                     ("http://ratings:9080/ratings/0", "ratings:9080")]


# --------------------------------------------------------------------------------------------
# failures


def test_details_down(launch, mesh):
    page = launch("productpage.py", **peer("details", closed_port()),
                  **peer("reviews", mesh["reviews-v2"].port))
    status, _, body = request(page.port, "/productpage")
    assert status == 200
    assert "Error fetching product details" in body
    assert "Sorry, product details are currently unavailable for this book." in body
    assert "Error fetching product reviews" not in body and "text-black-500" in body
    status, _, body = request(page.port, "/api/v1/products/0")
    assert status == 500 and "unavailable" in json.loads(body)["error"]


def test_ratings_down(launch):
    reviews = launch("reviews.py", SERVICE_VERSION="v3", **peer("ratings", closed_port()))
    details = launch.recorder()
    page = launch("productpage.py", **peer("details", details.port), **peer("reviews", reviews.port))
    status, _, body = request(reviews.port, "/reviews/0")
    assert [r["rating"] for r in json.loads(body)["reviews"]] == [
        {"error": "Ratings service is currently unavailable"}] * 2
    status, _, body = request(page.port, "/productpage")
    assert status == 200 and body.count("Ratings service is currently unavailable") == 2
    assert "glyphicon" not in body and "Reviewer1" in body


def test_ratings_slow_for_v3(launch):
    ratings = launch.recorder(delay=1.0)
    reviews = launch("reviews.py", SERVICE_VERSION="v3", RATINGS_TIMEOUT="0.3",
                     **peer("ratings", ratings.port))
    status, _, body = request(reviews.port, "/reviews/0")
    assert status == 200
    assert json.loads(body)["reviews"][0]["rating"] == {"error": "Ratings service is currently unavailable"}


def test_ratings_error_status(launch):
    ratings = launch.recorder(status=503)
    reviews = launch("reviews.py", SERVICE_VERSION="v2", **peer("ratings", ratings.port))
    _, _, body = request(reviews.port, "/reviews/0")
    assert json.loads(body)["reviews"][1]["rating"] == {"error": "Ratings service is currently unavailable"}


def test_reviews_slow_gives_up_after_one_retry(launch):
    reviews = launch.recorder(delay=1.5)
    details = launch.recorder()
    page = launch("productpage.py", REVIEWS_TIMEOUT="0.4", **peer("details", details.port),
                  **peer("reviews", reviews.port))
    started = time.monotonic()
    status, _, body = request(page.port, "/productpage")
    elapsed = time.monotonic() - started
    assert status == 200
    assert "Error fetching product reviews" in body
    assert "Sorry, product reviews are currently unavailable for this book." in body
    assert "PublisherA" in body  # details still shown
    assert len(reviews.requests) == 2  # the first attempt and one retry
    assert 0.8 <= elapsed < 3.0  # two 0.4 s attempts, well before the 1.5 s replies


def test_reviews_error_status_is_retried_once(launch):
    reviews = launch.recorder(status=503)
    page = launch("productpage.py", **peer("details", launch.recorder().port),
                  **peer("reviews", reviews.port))
    status, _, body = request(page.port, "/api/v1/products/0/reviews")
    assert status == 503 and json.loads(body) == {
        "error": "Sorry, product reviews are currently unavailable for this book."}
    assert len(reviews.requests) == 2
