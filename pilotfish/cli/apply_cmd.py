"""``pilotfish apply`` and ``pilotfish delete``: change the control plane's configuration.

    pilotfish apply -f samples/bookinfo/ -f my-rules.yaml     # all files: one change set
    pilotfish apply -R -f config/ --dry-run
    pilotfish delete -f my-rules.yaml
    pilotfish delete vs reviews ratings -n default

Output is kubectl's (``virtualservice.networking.istio.io/reviews created``). An apply is
all or nothing: if any document is invalid, the errors are printed (resource, field path,
file:line) and nothing is applied; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys

from pilotfish.cli.client import ApiError, Client, add_client_arguments, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verb = parser.prog.split()[-1]
    if verb == "delete":
        parser.add_argument("kind", nargs="?", metavar="KIND", help="kind (vs, virtualservices, dr, svc, ...)")
        parser.add_argument("names", nargs="*", metavar="NAME", help="names of the objects to delete")
        parser.add_argument("-n", "--namespace", help="namespace (default: default)")
        parser.add_argument("--ignore-not-found", action="store_true",
                            help="do not fail when an object does not exist")
    parser.add_argument("-f", "--filename", action="append", default=[], metavar="FILE|DIR",
                        help="a file or directory of YAML/JSON documents ('-' for stdin; repeatable)")
    parser.add_argument("-R", "--recursive", action="store_true",
                        help="descend into subdirectories of directory arguments")
    if verb == "apply":
        parser.add_argument("--dry-run", action="store_true",
                            help="validate and show what would change, without changing anything")
        parser.add_argument("-o", "--output", choices=["name", "json"],
                            help="print only resource/name (name) or the API's answer (json)")
    add_client_arguments(parser)


def read_files(paths: list[str], recursive: bool, err) -> list[tuple[str, str]]:
    """(name, text) of every file named and every YAML/JSON file under directories."""
    from pilotfish.cli.analyze_cmd import gather_files

    out = []
    for f in gather_files(paths, recursive, err):
        if f == "-":
            out.append(("stdin", sys.stdin.read()))
        else:
            with open(f, encoding="utf-8") as fh:
                out.append((f, fh.read()))
    return out


def _name(row: dict) -> str:
    return f"{row['resource']}/{row['name']}"


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    verb = getattr(args, "command", None) or ("delete" if hasattr(args, "ignore_not_found") else "apply")
    if verb == "delete" and args.kind and not args.filename:
        return _delete_named(args, out, err)
    if not args.filename:
        what = "KIND NAME or -f FILE" if verb == "delete" else "-f FILE|DIR"
        print(f"error: must specify {what}", file=err)
        return 2
    if verb == "delete" and args.kind:
        print("error: give either KIND NAME or -f FILE, not both", file=err)
        return 2
    try:
        files = read_files(args.filename, args.recursive, err)
    except FileNotFoundError as e:
        print(f"error: the path \"{e.args[0]}\" does not exist", file=err)
        return 1
    except (OSError, UnicodeDecodeError) as e:
        print(f"error: cannot read: {e}", file=err)
        return 1
    if not files:
        print(f"error: no objects passed to {verb}", file=err)
        return 1
    try:
        client = Client.from_args(args)
        if verb == "apply":
            res = client.apply(files, dry_run=args.dry_run)
        else:
            res = client.delete_documents(files)
    except ApiError as e:
        return fail(e, err)
    if verb == "apply" and args.output == "json":
        import json

        print(json.dumps(res, indent=2), file=out)
        return 0
    code = 0
    suffix = " (dry run)" if verb == "apply" and res.get("dryRun") else ""
    for row in res.get("results", []):
        for w in row.get("warnings") or []:
            print(f"Warning: {w.removeprefix('Warning: ')}", file=err)
        action = row["action"]
        if "resource" not in row:
            continue  # skipped documents: their warning says why
        if verb == "apply":
            if args.output == "name":
                print(_name(row), file=out)
            else:
                print(f"{_name(row)} {action}{suffix}", file=out)
        elif action == "deleted":
            print(f'{row["resource"]} "{row["name"]}" deleted', file=out)
        elif action == "not found":
            if not getattr(args, "ignore_not_found", False):
                plural = row["resource"]
                print(f'Error from server (NotFound): {plural} "{row["name"]}" not found', file=err)
                code = 1
    return code


def _delete_named(args: argparse.Namespace, out, err) -> int:
    if not args.names:
        print("error: resource(s) were provided, but no name was specified", file=err)
        return 2
    client = Client.from_args(args)
    code = 0
    for name in args.names:
        try:
            info = _kind_info(args.kind)
            ns = (args.namespace or "default") if info is None or info.namespaced else None
            res = client.delete(args.kind, ns, name)
        except ApiError as e:
            if e.status == 404 and args.ignore_not_found and e.payload.get("reason") == "NotFound":
                continue
            code = fail(e, err)
            if e.status == 0:
                return code
            continue
        for row in res.get("results", []):
            print(f'{row["resource"]} "{row["name"]}" deleted', file=out)
    return code


def _kind_info(kind: str):
    from pilotfish.api.kinds import resolve

    try:
        return resolve(kind)
    except KeyError:
        return None  # the server says it does not know the kind
