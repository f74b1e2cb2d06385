#!/usr/bin/env python3
"""Bookinfo productpage (v1): the book's page, built from the details and reviews services.

  GET  /                              a short index of the pages below
  GET  /productpage                   the HTML page (details + reviews of book 0)
  POST /login                         form field ``username`` (urlencoded or multipart):
                                      sets the ``session`` cookie, redirects to /productpage
  GET  /logout                        clears the cookie, redirects to /productpage
  GET  /health                        {"status": "Productpage is healthy"}
  GET  /api/v1/products               the list of books
  GET  /api/v1/products/<id>          details of a book (from details)
  GET  /api/v1/products/<id>/reviews  reviews of a book (from reviews)
  GET  /api/v1/products/<id>/ratings  ratings of a book (from ratings)
  GET  /static/bookinfo.css           the page's stylesheet

Calls: details with a 3 s timeout; reviews with a 3 s timeout and one retry (so up to about
6 s); ratings (API only) with a 3 s timeout. Each call carries the request's tracing headers and,
when a user is signed in, ``end-user: <name>``. Failures show Istio's error texts on the page.

Usage: python3 samples/bookinfo/src/productpage.py [--port N] [--host ADDR]
Environment:
  PORT, BIND_ADDRESS                 where to listen (default 9080 on 0.0.0.0)
  DETAILS_HOSTNAME, DETAILS_SERVICE_PORT   (default details, 9080)
  REVIEWS_HOSTNAME, REVIEWS_SERVICE_PORT   (default reviews, 9080)
  RATINGS_HOSTNAME, RATINGS_SERVICE_PORT   (default ratings, 9080)
  SERVICES_DOMAIN                    appended to the default host names when set
  DETAILS_TIMEOUT, REVIEWS_TIMEOUT, RATINGS_TIMEOUT   seconds per attempt (default 3)
  HTTP_PROXY                         send every call through this proxy (explicit mesh mode)
Standard library only.
"""

from __future__ import annotations

import email.parser
import email.policy
import sys
from html import escape
from urllib.parse import parse_qs, quote, unquote

from bookinfo_common import (
    Handler,
    Reply,
    arg_parser,
    env_float,
    forward_headers,
    html_reply,
    http_get,
    json_reply,
    log,
    peer_base_url,
    redirect_reply,
    serve,
)

PRODUCTS = [
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": (
            '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
            "one of <b>William Shakespeare's</b> earliest plays and his shortest comedy. Two pairs "
            "of identical twins, parted as babies, land in the same town on the same day; wrong "
            "husbands, wrong masters, wrongful arrests and a great deal of farce follow."
        ),
    }
]
DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Sorry, product ratings are currently unavailable for this book."
SESSION_COOKIE = "session"


class Peers:
    details = ""
    reviews = ""
    ratings = ""
    details_timeout = 3.0
    reviews_timeout = 3.0
    ratings_timeout = 3.0


def call(url: str, headers: dict[str, str], timeout: float) -> tuple[int, object | None]:
    """(status, JSON body); status 500 and None when the call itself failed."""
    try:
        resp = http_get(url, headers, timeout)
    except Exception as e:
        log(f"productpage: call {url} failed: {e!r}")
        return 500, None
    try:
        return resp.status, resp.json()
    except ValueError:
        return resp.status or 500, None


def get_details(product_id: str, headers: dict[str, str]) -> tuple[int, dict]:
    status, body = call(f"{Peers.details}/details/{product_id}", headers, Peers.details_timeout)
    if status == 200 and isinstance(body, dict):
        return 200, body
    return status if status != 200 else 500, {"error": DETAILS_ERROR}


def get_reviews(product_id: str, headers: dict[str, str]) -> tuple[int, dict]:
    status = 500
    for _attempt in (1, 2):  # one retry, as Istio's productpage does
        status, body = call(f"{Peers.reviews}/reviews/{product_id}", headers, Peers.reviews_timeout)
        if status == 200 and isinstance(body, dict):
            return 200, body
    return status if status != 200 else 500, {"error": REVIEWS_ERROR}


def get_ratings(product_id: str, headers: dict[str, str]) -> tuple[int, dict]:
    status, body = call(f"{Peers.ratings}/ratings/{product_id}", headers, Peers.ratings_timeout)
    if status == 200 and isinstance(body, dict):
        return 200, body
    return status if status != 200 else 500, {"error": RATINGS_ERROR}


# --------------------------------------------------------------------------------------------
# sessions


def session_user(cookie_header: str | None) -> str:
    for part in (cookie_header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == SESSION_COOKIE:
            return unquote(value.strip().strip('"'))
    return ""


def form_username(content_type: str, body: bytes) -> str:
    """``username`` from an urlencoded or multipart/form-data body."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if msg.is_multipart():
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "username":
                    payload = part.get_payload(decode=True) or b""
                    return payload.decode("utf-8", "replace").strip()
        return ""
    values = parse_qs(body.decode("utf-8", "replace"))
    return (values.get("username") or [""])[0].strip()


# --------------------------------------------------------------------------------------------
# the page

STYLESHEET = """\
body { margin: 0; font-family: Helvetica, Arial, sans-serif; color: #1f2937; background: #f9fafb; }
nav { display: flex; align-items: center; gap: 1rem; padding: .6rem 1.5rem; background: #1e293b; color: #f1f5f9; }
nav .brand { font-weight: bold; font-size: 1.1rem; color: #f1f5f9; text-decoration: none; flex: 1; }
nav a { color: #93c5fd; }
nav form { display: flex; gap: .4rem; margin: 0; }
nav input { padding: .2rem .4rem; }
main { max-width: 64rem; margin: 0 auto; padding: 1rem 1.5rem; }
h3.book-title { font-size: 1.8rem; margin: .8rem 0 .4rem; }
.columns { display: flex; gap: 2rem; flex-wrap: wrap; }
.columns > section { flex: 1; min-width: 18rem; }
dl.details { display: grid; grid-template-columns: max-content auto; gap: .3rem 1rem; }
dl.details dt { font-weight: bold; }
dl.details dd { margin: 0; }
blockquote { margin: 0 0 1rem; padding: .5rem 1rem; border-left: 4px solid #cbd5e1; background: #fff; }
blockquote small { display: block; color: #64748b; margin: .3rem 0; }
.error { color: #b91c1c; }
.glyphicon-star::before { content: "\\2605"; }
.glyphicon-star-empty::before { content: "\\2606"; }
.glyphicon { font-size: 1.2rem; font-style: normal; }
.text-black-500 { color: #000000; }
.text-red-500 { color: #ef4444; }
.reviews-from { color: #64748b; font-size: .85rem; }
"""


def _stars(rating: dict) -> str:
    stars = rating.get("stars")
    color = "".join(ch for ch in str(rating.get("color") or "black") if ch.isalnum() or ch == "-")
    if isinstance(stars, int) and not isinstance(stars, bool):
        stars = max(0, min(stars, 5))
        cls = f"text-{color}-500"
        return (f'<span class="glyphicon glyphicon-star {cls}"></span>' * stars
                + f'<span class="glyphicon glyphicon-star-empty {cls}"></span>' * (5 - stars))
    if rating.get("error"):
        return f'<p class="error"><i>{escape(str(rating["error"]))}</i></p>'
    return ""


def _details_html(status: int, details: dict) -> str:
    if status != 200:
        return ('<h4 class="error">Error fetching product details!</h4>\n'
                f"<p>{escape(str(details.get('error', DETAILS_ERROR)))}</p>")
    rows = [("Type", "type"), ("Pages", "pages"), ("Publisher", "publisher"),
            ("Language", "language"), ("ISBN-10", "ISBN-10"), ("ISBN-13", "ISBN-13")]
    items = "\n".join(f"<dt>{label}:</dt><dd>{escape(str(details.get(key, '')))}</dd>"
                      for label, key in rows)
    return f'<h4>Book Details</h4>\n<dl class="details">\n{items}\n</dl>'


def _reviews_html(status: int, reviews: dict) -> str:
    if status != 200:
        return ('<h4 class="error">Error fetching product reviews!</h4>\n'
                f"<p>{escape(str(reviews.get('error', REVIEWS_ERROR)))}</p>")
    parts = ["<h4>Book Reviews</h4>"]
    for review in reviews.get("reviews") or []:
        if not isinstance(review, dict):
            continue
        rating = review.get("rating")
        parts.append(
            "<blockquote>\n"
            f"<p>{escape(str(review.get('text', '')))}</p>\n"
            f"<small>{escape(str(review.get('reviewer', '')))}</small>\n"
            + (_stars(rating) if isinstance(rating, dict) else "")
            + "\n</blockquote>"
        )
    pod = reviews.get("podname")
    if pod:
        parts.append(f'<p class="reviews-from">Reviews served by: {escape(str(pod))}'
                     + (f" ({escape(str(reviews['clustername']))})"
                        if reviews.get("clustername") not in (None, "", "null") else "")
                     + "</p>")
    return "\n".join(parts)


def render_page(product: dict, user: str, details: tuple[int, dict],
                reviews: tuple[int, dict]) -> str:
    if user:
        account = (f"<span class=\"user\">Signed in as {escape(user)}</span>\n"
                   '<a href="logout">Sign out</a>')
    else:
        account = ('<form method="post" action="login">\n'
                   '<input type="text" name="username" placeholder="User Name" aria-label="User Name">\n'
                   '<input type="password" name="passwd" placeholder="Password" aria-label="Password">\n'
                   '<button type="submit">Sign in</button>\n</form>')
    title = escape(product["title"])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Simple Bookstore App</title>
<link rel="stylesheet" href="static/bookinfo.css">
</head>
<body>
<nav>
<a class="brand" href="productpage">BookInfo Sample</a>
{account}
</nav>
<main>
<h3 class="book-title">{title}</h3>
<p class="summary">{product["descriptionHtml"]}</p>
<div class="columns">
<section class="details">
{_details_html(*details)}
</section>
<section class="reviews">
{_reviews_html(*reviews)}
</section>
</div>
</main>
</body>
</html>
"""


INDEX = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Simple Bookstore App</title></head>
<body>
<h3>Hello! This is a simple bookstore application consisting of four services.</h3>
<ul>
<li><a href="productpage">The product page</a> (details and reviews of "The Comedy of Errors")</li>
<li><a href="api/v1/products">The products API</a>: /api/v1/products, /api/v1/products/&lt;id&gt;,
/api/v1/products/&lt;id&gt;/reviews, /api/v1/products/&lt;id&gt;/ratings</li>
</ul>
</body>
</html>
"""


class ProductPageHandler(Handler):
    def outbound_headers(self) -> dict[str, str]:
        headers = forward_headers(self.headers)
        headers.pop("end-user", None)  # only the session says who the user is
        user = session_user(self.headers.get("Cookie"))
        if user:
            headers["end-user"] = user
        return headers

    def route(self, method, path, query) -> Reply | None:
        if path == "/login":
            if method != "POST":
                return json_reply({"error": "sign in with POST /login, form field username"}, 405)
            user = form_username(self.headers.get("Content-Type", ""), self.body)
            if not user:
                return redirect_reply("/productpage")
            return redirect_reply("/productpage", [
                ("Set-Cookie", f"{SESSION_COOKIE}={quote(user, safe='')}; Path=/; HttpOnly; SameSite=Lax")])
        if path == "/logout":
            return redirect_reply("/productpage", [
                ("Set-Cookie", f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")])
        if method != "GET":
            return json_reply({"error": f"method {method} not allowed"}, 405)
        if path in ("/", "/index.html"):
            return html_reply(INDEX)
        if path == "/health":
            return json_reply({"status": "Productpage is healthy"})
        if path == "/productpage":
            product = PRODUCTS[0]
            headers = self.outbound_headers()
            details = get_details(str(product["id"]), headers)
            reviews = get_reviews(str(product["id"]), headers)
            user = session_user(self.headers.get("Cookie"))
            return html_reply(render_page(product, user, details, reviews))
        if path == "/static/bookinfo.css":
            return Reply(200, STYLESHEET.encode(), "text/css; charset=utf-8")
        if path == "/api/v1/products":
            return json_reply(PRODUCTS)
        if path.startswith("/api/v1/products/"):
            rest = path[len("/api/v1/products/"):].split("/")
            if not rest[0]:
                return None
            product_id = quote(unquote(rest[0]), safe="")
            if len(rest) == 1:
                status, body = get_details(product_id, self.outbound_headers())
            elif rest[1:] == ["reviews"]:
                status, body = get_reviews(product_id, self.outbound_headers())
            elif rest[1:] == ["ratings"]:
                status, body = get_ratings(product_id, self.outbound_headers())
            else:
                return None
            return json_reply(body, status)
        return None


def configure() -> None:
    Peers.details = peer_base_url("details")
    Peers.reviews = peer_base_url("reviews")
    Peers.ratings = peer_base_url("ratings")
    Peers.details_timeout = env_float("DETAILS_TIMEOUT", 3.0)
    Peers.reviews_timeout = env_float("REVIEWS_TIMEOUT", 3.0)
    Peers.ratings_timeout = env_float("RATINGS_TIMEOUT", 3.0)


def main(argv: list[str] | None = None) -> int:
    args = arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    configure()
    return serve("productpage-v1", ProductPageHandler, args)


if __name__ == "__main__":
    sys.exit(main())
