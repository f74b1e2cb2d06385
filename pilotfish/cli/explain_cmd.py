"""``pilotfish explain``: follow one hypothetical request through one proxy.

    pilotfish explain productpage GET http://reviews:9080/reviews/0
    pilotfish explain productpage GET http://reviews:9080/reviews/0 -H 'end-user: jason'
    pilotfish explain istio-ingressgateway.istio-system GET http://bookinfo.example.com/productpage
    pilotfish explain reviews-v1 GET http://reviews:9080/ --inbound -o json

The control plane replays the request against the last configuration it sent to that proxy
and reports the listener and filter chain, route table, virtual host (and why), every route
tried in order (and why each earlier one did not match), the winning route's timeout,
retries, fault, mirror, rewrite, CORS and header edits, the destination clusters with their
weights, load balancing, connection pool limits, outlier detection and endpoints -- each with
the resource (file:line) that produced it -- and what the client would get.
"""

from __future__ import annotations

import argparse
import json
import sys

from pilotfish.cli.client import ApiError, Client, add_client_arguments, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("proxy", metavar="POD|GATEWAY", help="the proxy: pod name (or prefix), pod.namespace, or proxy id")
    parser.add_argument("method", metavar="METHOD", help="GET, POST, ...")
    parser.add_argument("url", metavar="URL", help="http://host[:port]/path?query as the application would call it")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a request header (repeatable), as curl's -H")
    parser.add_argument("--inbound", action="store_true",
                        help="a request arriving at the proxy's workload (default: one the workload sends)")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text", help="output format")
    add_client_arguments(parser)


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    from pilotfish.controlplane.explain import ExplainError, parse_headers, render

    try:
        headers = parse_headers(args.header)
    except ExplainError as e:
        print(f"Error: {e}", file=err)
        return 2
    client = Client.from_args(args)
    try:
        result = client.explain(args.proxy, args.method, args.url, headers,
                                "inbound" if args.inbound else None)
    except ApiError as e:
        return fail(e, err)
    if args.output == "json":
        print(json.dumps(result, indent=2), file=out)
    else:
        out.write(render(result))
    return 0
