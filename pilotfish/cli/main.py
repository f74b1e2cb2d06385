"""The ``pilotfish`` command. Each subcommand lives in its own module, imported only when used,
so that a proxy process does not pay for the CLI's other parts."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, help). Each module has ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "proxy": ("pilotfish.cli.proxy_cmd", "run a proxy (sidecar or gateway) from a config file or a control plane"),
    "analyze": ("pilotfish.cli.analyze_cmd", "analyze Istio/Kubernetes configuration"),
    "version": ("pilotfish.cli.version_cmd", "print the version"),
    "controlplane": ("pilotfish.cli.controlplane_cmd", "run the control plane (config store, discovery, API)"),
    "apply": ("pilotfish.cli.apply_cmd", "apply configuration from files (all or nothing)"),
    "delete": ("pilotfish.cli.apply_cmd", "delete configuration, by file or by kind and name"),
    "get": ("pilotfish.cli.get_cmd", "list configuration objects"),
    "proxy-status": ("pilotfish.cli.status_cmd", "show whether each proxy has its latest configuration"),
    "proxy-config": ("pilotfish.cli.status_cmd", "show the configuration sent to one proxy"),
    "explain": ("pilotfish.cli.explain_cmd", "explain how one proxy handles one request"),
    "up": ("pilotfish.cli.up_cmd", "run the mesh on this machine: control plane, pods, ingress gateway"),
    "down": ("pilotfish.cli.up_cmd", "stop the mesh started by `up`, leaving nothing behind"),
    "demo": ("pilotfish.cli.up_cmd", "run the mesh with the bookinfo sample and its gateway"),
    "logs": ("pilotfish.cli.pods_cmd", "print a pod's container output (the sidecar's: -c istio-proxy)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilotfish", description="A service mesh that reads Istio's YAML.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # a command whose module is not built yet
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Only import the chosen command's module when we know it, to keep start-up light.
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
