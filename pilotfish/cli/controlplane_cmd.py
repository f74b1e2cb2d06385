"""``pilotfish controlplane``: run the control plane (config store, discovery, HTTP API).

    pilotfish controlplane                         # state in ~/.pilotfish, API on 127.0.0.1:15080
    pilotfish controlplane --state-dir ./state --api-address 127.0.0.1:0 --discovery-address 127.0.0.1:0

The configuration lives in ``<state>/config/`` (a snapshot and a journal) and survives restarts. The token that
protects the API and the discovery port is ``<state>/token`` (created at the first start,
mode 0600). Once serving, one line on stderr gives the addresses actually bound::

    pilotfish controlplane: ready; api http://127.0.0.1:15080 discovery 127.0.0.1:15010 state /home/me/.pilotfish (12 objects)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Kept here (not imported from the server) so that building the CLI's parser stays cheap.
DEFAULT_API_ADDRESS = "127.0.0.1:15080"
DEFAULT_DISCOVERY_ADDRESS = "127.0.0.1:15010"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the configuration and the token live (default: $PILOTFISH_STATE or ~/.pilotfish)")
    parser.add_argument("--api-address", default=DEFAULT_API_ADDRESS, metavar="HOST:PORT",
                        help=f"the HTTP API the CLI talks to (default: {DEFAULT_API_ADDRESS}; port 0: any free port)")
    parser.add_argument("--discovery-address", default=DEFAULT_DISCOVERY_ADDRESS, metavar="HOST:PORT",
                        help=f"where proxies connect for their configuration (default: {DEFAULT_DISCOVERY_ADDRESS}; "
                             "'off' to disable)")
    parser.add_argument("--token-file", metavar="FILE",
                        help="the API and discovery token (default: <state>/token; generated if missing)")
    parser.add_argument("--debounce", type=float, default=0.1, metavar="SECONDS",
                        help="wait this long after a change before pushing (default: 0.1)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="log level (default: warning)")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from pilotfish.config import StateError
    from pilotfish.controlplane.server import (
        default_state_dir,
        load_or_create_token,
        parse_address,
        serve,
    )

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()
    try:
        api = parse_address(args.api_address, 15080)
        disc = None if args.discovery_address.strip().lower() in ("off", "none", "") else parse_address(
            args.discovery_address, 15010
        )
    except ValueError as e:
        print(f"pilotfish controlplane: {e}", file=sys.stderr)
        return 2
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        token_path = Path(args.token_file).expanduser() if args.token_file else state / "token"
        token = load_or_create_token(token_path)
    except OSError as e:
        print(f"pilotfish controlplane: cannot use state directory {state}: {e}", file=sys.stderr)
        return 1

    def ready(cp) -> None:
        api_host, api_port = cp.api_address
        d = "off" if cp.discovery_address is None else f"{cp.discovery_address[0]}:{cp.discovery_address[1]}"
        notes = ""
        if not cp.can_translate:
            notes = " (translate not available: proxies get no configuration)"
        if cp.build_error:
            notes += f" (config view error: {cp.build_error})"
        for issue in cp.store.load_issues:
            print(f"pilotfish controlplane: warning: stored object: {issue}", file=sys.stderr)
        print(
            f"pilotfish controlplane: ready; api http://{api_host}:{api_port} discovery {d} "
            f"state {state} ({len(cp.store)} objects){notes}",
            file=sys.stderr,
            flush=True,
        )

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        return runner(serve(state, token, api, disc, ready))
    except StateError as e:
        print(f"pilotfish controlplane: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pilotfish controlplane: cannot listen: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        return 0
