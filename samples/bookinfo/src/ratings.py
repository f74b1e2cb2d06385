#!/usr/bin/env python3
"""Bookinfo ratings (v1): each reviewer's stars for a book, as JSON.

  GET  /ratings/<id>   {"id": <id>, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
  POST /ratings/<id>   body {"Reviewer1": n, "Reviewer2": m}: replace that book's ratings
                       (kept in memory)
  GET  /health         {"status": "Ratings is healthy"}

Usage: python3 samples/bookinfo/src/ratings.py [--port N] [--host ADDR] [--version V]
Environment: PORT (default 9080), BIND_ADDRESS (default 0.0.0.0), SERVICE_VERSION (default v1).
Versions for resilience demos, as Istio's ratings has them: ``v-faulty`` answers half of the
requests with 503, ``v-delayed`` delays half of them by 7 s, ``v-unavailable`` always answers
503. Every request's ``end-user`` and ``x-request-id`` appear in the log line.
Standard library only.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time

from bookinfo_common import Handler, arg_parser, json_reply, serve

DEFAULT_RATINGS = {"Reviewer1": 5, "Reviewer2": 4}
VERSIONS = ("v1", "v-faulty", "v-delayed", "v-unavailable")

_lock = threading.Lock()
_ratings: dict[int, dict[str, int]] = {}


class RatingsHandler(Handler):
    version = "v1"

    def route(self, method, path, query):
        if path == "/health":
            return json_reply({"status": "Ratings is healthy"})
        if not path.startswith("/ratings/"):
            return None
        try:
            pid = int(path[len("/ratings/"):])
        except ValueError:
            return json_reply({"error": "please provide numeric product ID"}, 400)
        if self.version == "v-unavailable" or (self.version == "v-faulty" and random.random() < 0.5):
            return json_reply({"error": "Service unavailable"}, 503)
        if self.version == "v-delayed" and random.random() < 0.5:
            time.sleep(7)
        if method == "POST":
            try:
                body = json.loads(self.body or b"null")
                if not isinstance(body, dict) or not all(
                        isinstance(v, int) and not isinstance(v, bool) for v in body.values()):
                    raise ValueError
            except ValueError:
                return json_reply({"error": "expected a JSON object of reviewer -> stars"}, 400)
            with _lock:
                _ratings[pid] = {str(k): v for k, v in body.items()}
        elif method != "GET":
            return json_reply({"error": f"method {method} not allowed"}, 405)
        with _lock:
            ratings = dict(_ratings.get(pid, DEFAULT_RATINGS))
        return json_reply({"id": pid, "ratings": ratings})


def main(argv: list[str] | None = None) -> int:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--version", default=None, choices=VERSIONS,
                   help="behaviour (default $SERVICE_VERSION, else v1)")
    args = p.parse_args(argv)
    version = args.version or os.environ.get("SERVICE_VERSION", "").strip() or "v1"
    if version not in VERSIONS:
        sys.exit(f"ratings: unknown version {version!r} (known: {', '.join(VERSIONS)})")
    RatingsHandler.version = version
    return serve(f"ratings-{version}", RatingsHandler, args)


if __name__ == "__main__":
    sys.exit(main())
