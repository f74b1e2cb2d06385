"""``pilotfish proxy``: run a proxy (sidecar or gateway).

From a snapshot file (``--config FILE``): SIGHUP re-reads the file and swaps the snapshot in (or
keeps the old one and says why). From a control plane (``--discovery HOST:PORT --token-file
FILE`` plus the node's identity): the proxy connects, receives its snapshots and acknowledges
them; ``--config`` is then optional and only the bootstrap snapshot (without it the proxy
starts with the admin endpoint alone and ``/ready`` answers 503 until its first snapshot;
SIGHUP does not re-read it). SIGTERM drains and exits. A running proxy also takes snapshots pushed to its admin endpoint
(``POST /config``).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="proxy configuration (YAML or JSON); with --discovery, "
                        "the bootstrap snapshot served until the control plane sends one")
    parser.add_argument("--admin-port", type=int, default=None, help="override admin.port (0: ephemeral)")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    d = parser.add_argument_group("control plane")
    d.add_argument("--discovery", metavar="HOST:PORT",
                   help="receive snapshots from this control plane (port 15010 if omitted)")
    tok = d.add_mutually_exclusive_group()
    tok.add_argument("--token", help="the control plane's bootstrap token (visible in ps: prefer --token-file)")
    tok.add_argument("--token-file", metavar="FILE", help="read the bootstrap token from FILE")
    d.add_argument("--discovery-backoff-max", type=float, default=5.0, metavar="SECONDS",
                   help="longest wait between reconnection attempts (default 5)")
    n = parser.add_argument_group("node identity (what the proxy tells the control plane)")
    n.add_argument("--node-json", metavar="JSON", help="the node as a JSON object (model.Node's fields); "
                   "the options below override its fields")
    n.add_argument("--node-id", help="default: ROLE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local")
    n.add_argument("--pod-name", help="the pod (workload instance) name")
    n.add_argument("--namespace")
    n.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    n.add_argument("--service-account")
    n.add_argument("--ip", action="append", default=[], help="the workload's address (repeatable)")
    n.add_argument("--role", choices=["sidecar", "gateway"])
    n.add_argument("--interception", choices=["REDIRECT", "NONE"])
    n.add_argument("--workload-port", action="append", type=int, default=[], metavar="N",
                   help="a port the workload's containers declare (repeatable)")
    n.add_argument("--app-port", action="append", default=[], metavar="PORT:APP",
                   help="interception NONE: workload port PORT is served by the app on 127.0.0.1:APP")


class _UsageError(Exception):
    pass


def _node(base, args: argparse.Namespace):
    """The node: the bootstrap snapshot's (or the default), then --node-json, then the options."""
    import msgspec

    from pilotfish.proxy import model

    data = msgspec.to_builtins(base)
    explicit_id = False
    if args.node_json:
        try:
            extra = json.loads(args.node_json)
        except ValueError as e:
            raise _UsageError(f"--node-json: invalid JSON: {e}") from None
        if not isinstance(extra, dict):
            raise _UsageError("--node-json: expected a JSON object")
        data.update(extra)
        explicit_id = "id" in extra
    for opt, field in (("pod_name", "name"), ("namespace", "namespace"), ("service_account", "service_account"),
                       ("role", "role"), ("interception", "interception")):
        v = getattr(args, opt)
        if v is not None:
            data[field] = v
    for item in args.label:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise _UsageError(f"--label {item!r}: expected KEY=VALUE")
        data.setdefault("labels", {})[k] = v
    if args.ip:
        data["ips"] = list(args.ip)
    if args.workload_port:
        data["workload_ports"] = list(args.workload_port)
    for item in args.app_port:
        p, sep, a = item.partition(":")
        if not sep or not p.isdigit() or not a.isdigit():
            raise _UsageError(f"--app-port {item!r}: expected PORT:APP_PORT")
        data.setdefault("app_ports", {})[int(p)] = int(a)
    if args.node_id:
        data["id"] = args.node_id
    elif not explicit_id and data.get("id", model.Node().id) == model.Node().id:
        ip = (data.get("ips") or ["127.0.0.1"])[0]
        ns = data.get("namespace", "default")
        data["id"] = f"{data.get('role', 'standalone')}~{ip}~{data.get('name', 'standalone')}.{ns}~{ns}.svc.cluster.local"
    try:
        return msgspec.convert(data, model.Node)
    except msgspec.ValidationError as e:
        raise _UsageError(f"invalid node: {e}") from None


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise _UsageError(f"cannot read {args.token_file}: {e.strerror}") from None
    else:
        token = args.token or ""
    if not token:
        raise _UsageError("--discovery needs a token (--token-file FILE or --token TOKEN)")
    return token


def run(args: argparse.Namespace) -> int:
    from pilotfish.proxy import model

    if not args.config and not args.discovery:
        print("pilotfish proxy: give --config FILE, --discovery HOST:PORT, or both", file=sys.stderr)
        return 2
    if args.config:
        try:
            cfg = model.load_config(args.config)
        except model.ConfigError as e:
            print(f"pilotfish proxy: invalid configuration: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"pilotfish proxy: cannot read {args.config}: {e.strerror}", file=sys.stderr)
            return 2
    else:
        cfg = model.ProxyConfig(version="")  # nothing to serve until the first snapshot
    if args.admin_port is not None:
        cfg.admin.port = args.admin_port
    client_args = None
    if args.discovery:
        from pilotfish.proxy.discovery_client import parse_address

        try:
            address = parse_address(args.discovery)
            cfg.node = _node(cfg.node, args)
            client_args = (address, _token(args), cfg.node)
        except (_UsageError, ValueError) as e:
            print(f"pilotfish proxy: {e}", file=sys.stderr)
            return 2
    if args.check:
        if not args.config:
            print("pilotfish proxy: --check needs --config", file=sys.stderr)
            return 2
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

    def setup(proxy) -> None:
        if client_args is not None:
            from pilotfish.proxy.discovery_client import DiscoveryClient, attach

            address, token, node = client_args
            client = DiscoveryClient(proxy, address, token, node, backoff_max=args.discovery_backoff_max)
            attach(proxy, client, bootstrapped=bool(args.config))

    def ready(proxy) -> None:
        ports = ", ".join(f"{lr.name}={lr.cfg.address}:{lr.bound_port}" for lr in proxy.listeners.values())
        admin = f"{cfg.admin.address}:{proxy.admin.port}" if proxy.admin else "off"
        where = f"; discovery {proxy.discovery.address} as {cfg.node.id}" if proxy.discovery else ""
        print(f"pilotfish proxy: config version {cfg.version or '-'}; listeners {ports or '-'}; "
              f"admin {admin}{where}", file=sys.stderr, flush=True)
        if proxy.discovery is not None:
            proxy.discovery.start()

    # With a control plane the file is only the bootstrap: SIGHUP does not re-read it (that
    # would undo what the control plane sent).
    return run_proxy(cfg, None if args.discovery else args.config, ready, setup)
