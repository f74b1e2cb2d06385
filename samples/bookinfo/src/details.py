#!/usr/bin/env python3
"""Bookinfo details (v1): the book's publication details, as JSON.

  GET /details/<id>   {"id": <id>, "author": ..., "year": ..., "type": ..., "pages": ...,
                       "publisher": ..., "language": ..., "ISBN-10": ..., "ISBN-13": ...}
  GET /health         {"status": "Details is healthy"}

Usage: python3 samples/bookinfo/src/details.py [--port N] [--host ADDR]
Environment: PORT (default 9080), BIND_ADDRESS (default 0.0.0.0).
Standard library only.
"""

from __future__ import annotations

import sys

from bookinfo_common import Handler, Reply, arg_parser, json_reply, serve

BOOK = {
    "author": "William Shakespeare",
    "year": 1595,
    "type": "paperback",
    "pages": 200,
    "publisher": "PublisherA",
    "language": "English",
    "ISBN-10": "1234567890",
    "ISBN-13": "123-1234567890",
}


def details(product_id: str) -> Reply:
    try:
        pid = int(product_id)
    except ValueError:
        return json_reply({"error": "please provide numeric product id"}, 400)
    return json_reply({"id": pid, **BOOK})


class DetailsHandler(Handler):
    def route(self, method, path, query):
        if method != "GET":
            return json_reply({"error": f"method {method} not allowed"}, 405)
        if path == "/health":
            return json_reply({"status": "Details is healthy"})
        if path.startswith("/details/"):
            return details(path[len("/details/"):])
        return None


def main(argv: list[str] | None = None) -> int:
    args = arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    return serve("details-v1", DetailsHandler, args)


if __name__ == "__main__":
    sys.exit(main())
