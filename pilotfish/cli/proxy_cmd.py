"""``pilotfish proxy --config FILE``: run a proxy (sidecar or gateway) from a snapshot file.

SIGHUP re-reads the file and swaps the snapshot in (or keeps the old one and says why);
SIGTERM drains and exits. A running proxy also takes snapshots pushed to its admin
endpoint (``POST /config``).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="proxy configuration (YAML or JSON)")
    parser.add_argument("--admin-port", type=int, default=None, help="override admin.port (0: ephemeral)")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")


def run(args: argparse.Namespace) -> int:
    from pilotfish.proxy import model

    try:
        cfg = model.load_config(args.config)
    except model.ConfigError as e:
        print(f"pilotfish proxy: invalid configuration: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pilotfish proxy: cannot read {args.config}: {e.strerror}", file=sys.stderr)
        return 2
    if args.admin_port is not None:
        cfg.admin.port = args.admin_port
    if args.check:
        from pilotfish.proxy.server import check_config

        try:
            check_config(cfg)
        except ValueError as e:
            print(f"pilotfish proxy: invalid configuration: {e}", file=sys.stderr)
            return 2
        print(f"{args.config}: ok (version {cfg.version}, {len(cfg.listeners)} listeners, "
              f"{len(cfg.clusters)} clusters)")
        return 0
    from pilotfish.proxy.server import run as run_proxy

    def ready(proxy) -> None:
        ports = ", ".join(f"{lr.name}={lr.cfg.address}:{lr.bound_port}" for lr in proxy.listeners.values())
        admin = f"{cfg.admin.address}:{proxy.admin.port}" if proxy.admin else "off"
        print(f"pilotfish proxy: config version {cfg.version}; listeners {ports}; admin {admin}",
              file=sys.stderr, flush=True)

    return run_proxy(cfg, args.config, ready)
