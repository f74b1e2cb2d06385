#!/usr/bin/env python3
"""Bookinfo reviews (v1, v2, v3): a book's reviews, with the reviewers' stars from ratings.

  GET /reviews/<id>   {"id": "<id>", "podname": ..., "clustername": ..., "reviews": [
                         {"reviewer": "Reviewer1", "text": ..., "rating": {"stars": 5, "color": "black"}},
                         ...]}
  GET /health         {"status": "Reviews is healthy"}

The three versions are one program:
  v1  no stars; does not call ratings (reviews have no "rating" field)
  v2  calls ratings (timeout 10 s), black stars
  v3  calls ratings (timeout 2.5 s), red stars
When ratings fails (error status, refused, timed out) each review carries
``"rating": {"error": "Ratings service is currently unavailable"}``.

Usage: python3 samples/bookinfo/src/reviews.py [--port N] [--host ADDR] [--version v1|v2|v3]
Environment:
  SERVICE_VERSION        v1 | v2 | v3 (default v1; --version wins)
  PORT, BIND_ADDRESS     where to listen (default 9080 on 0.0.0.0)
  RATINGS_HOSTNAME       ratings' host (default "ratings", plus ".$SERVICES_DOMAIN" if set)
  RATINGS_SERVICE_PORT   ratings' port (default 9080)
  RATINGS_TIMEOUT        seconds to wait for ratings (default 10 for v2, 2.5 for v3)
  ENABLE_RATINGS, STAR_COLOR   override what the version implies ("true"/"false"; a colour)
  HOSTNAME (or POD_NAME), CLUSTER_NAME   reported as podname and clustername
  HTTP_PROXY             send the ratings call through this proxy (explicit mesh mode)
The request's tracing headers and ``end-user`` are forwarded to ratings.
Standard library only.
"""

from __future__ import annotations

import os
import socket
import sys

from bookinfo_common import (
    Handler,
    arg_parser,
    env_float,
    forward_headers,
    http_get,
    json_reply,
    log,
    peer_base_url,
    serve,
)

VERSIONS = {  # version -> (calls ratings, star colour, ratings timeout in seconds)
    "v1": (False, "", 0.0),
    "v2": (True, "black", 10.0),
    "v3": (True, "red", 2.5),
}
REVIEWS = (
    ("Reviewer1", "A riot from the first scene: two pairs of twins, one town, and mix-ups that "
                  "keep getting better. The slapstick still lands."),
    ("Reviewer2", "Great fun from start to finish, if lighter in theme than the plays "
                  "Shakespeare wrote later."),
)
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"


class Settings:
    ratings_enabled = False
    star_color = ""
    ratings_url = ""
    ratings_timeout = 0.0
    podname = ""
    clustername = "null"


def fetch_ratings(product_id: str, headers: dict[str, str]) -> dict | None:
    """The reviewer -> stars map from ratings, or None when ratings fails."""
    url = f"{Settings.ratings_url}/ratings/{product_id}"
    try:
        resp = http_get(url, headers, Settings.ratings_timeout)
    except Exception as e:
        log(f"reviews: ratings call {url} failed: {e!r}")
        return None
    if resp.status != 200:
        log(f"reviews: ratings call {url} answered {resp.status}")
        return None
    try:
        ratings = resp.json().get("ratings")
    except (ValueError, AttributeError):
        ratings = None
    if not isinstance(ratings, dict):
        log(f"reviews: ratings call {url} answered an unexpected body")
        return None
    return ratings


def reviews(product_id: str, incoming) -> dict:
    ratings = None
    if Settings.ratings_enabled:
        ratings = fetch_ratings(product_id, forward_headers(incoming))
    out = []
    for reviewer, text in REVIEWS:
        review: dict = {"reviewer": reviewer, "text": text}
        if Settings.ratings_enabled:
            stars = ratings.get(reviewer) if ratings is not None else None
            if isinstance(stars, int) and not isinstance(stars, bool):
                review["rating"] = {"stars": stars, "color": Settings.star_color}
            else:
                review["rating"] = {"error": RATINGS_UNAVAILABLE}
        out.append(review)
    return {"id": product_id, "podname": Settings.podname, "clustername": Settings.clustername,
            "reviews": out}


class ReviewsHandler(Handler):
    def route(self, method, path, query):
        if method != "GET":
            return json_reply({"error": f"method {method} not allowed"}, 405)
        if path == "/health":
            return json_reply({"status": "Reviews is healthy"})
        if path.startswith("/reviews/"):
            product_id = path[len("/reviews/"):]
            if not product_id or "/" in product_id:
                return None
            return json_reply(reviews(product_id, self.headers))
        return None


def configure(version: str) -> None:
    enabled, color, timeout = VERSIONS[version]
    flag = os.environ.get("ENABLE_RATINGS", "").strip().lower()
    if flag:
        enabled = flag in ("1", "true", "yes", "on")
    Settings.ratings_enabled = enabled
    Settings.star_color = os.environ.get("STAR_COLOR", "").strip() or color or "black"
    Settings.ratings_url = peer_base_url("ratings")
    Settings.ratings_timeout = env_float("RATINGS_TIMEOUT", timeout or 10.0)
    Settings.podname = (os.environ.get("HOSTNAME") or os.environ.get("POD_NAME")
                        or socket.gethostname())
    Settings.clustername = os.environ.get("CLUSTER_NAME", "").strip() or "null"


def main(argv: list[str] | None = None) -> int:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--version", default=None, choices=sorted(VERSIONS),
                   help="v1, v2 or v3 (default $SERVICE_VERSION, else v1)")
    args = p.parse_args(argv)
    version = args.version or os.environ.get("SERVICE_VERSION", "").strip() or "v1"
    if version not in VERSIONS:
        sys.exit(f"reviews: unknown version {version!r} (known: v1, v2, v3)")
    configure(version)
    return serve(f"reviews-{version}", ReviewsHandler, args)


if __name__ == "__main__":
    sys.exit(main())
