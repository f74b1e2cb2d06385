"""``pilotfish analyze``: run Istio's configuration analyzers and print what istioctl prints.

    pilotfish analyze -f bookinfo/ -f my-rules.yaml
    pilotfish analyze -A -o json --failure-threshold Warning samples/
    pilotfish analyze                      # the running mesh (pilotfish up), via its control plane

Exit codes follow ``istioctl analyze``: 79 when a message at or above ``--failure-threshold``
was found, 65 when an input could not be read or parsed, 64 for a usage error, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable

from pilotfish.api.loader import LoadError, Resource, load_text

EXIT_OK = 0
EXIT_USAGE = 64
EXIT_DATA = 65
EXIT_ISSUES = 79

SUFFIXES = (".json", ".yaml", ".yml")
DOCS = "https://istio.io/latest/docs/reference/config/analysis"
COLORS = {"Error": "\033[1;31m", "Warning": "\033[33m"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE|DIR",
        help="files or directories to analyze ('-' for stdin)",
    )
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="a file or directory to analyze (repeatable)",
    )
    parser.add_argument(
        "-R",
        "--recursive",
        action="store_true",
        help="descend into subdirectories of directory arguments",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        help="namespace of resources that name none, and of the messages shown (default: default)",
    )
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="show messages for all namespaces"
    )
    parser.add_argument(
        "-i",
        "--istio-namespace",
        default="istio-system",
        help="namespace of the mesh control plane (default: istio-system)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="log",
        choices=["log", "text", "json", "yaml"],
        help="output format (default: log, istioctl's line format)",
    )
    parser.add_argument(
        "--failure-threshold",
        default="Error",
        metavar="LEVEL",
        help="lowest level that makes the exit code non-zero: Error, Warning or Info (default: Error)",
    )
    parser.add_argument(
        "--output-threshold",
        default="Info",
        metavar="LEVEL",
        help="lowest level printed (default: Info)",
    )
    parser.add_argument(
        "--analyzer",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this analyzer, by Istio's name (repeatable; see --list-analyzers)",
    )
    parser.add_argument(
        "-L", "--list-analyzers", action="store_true", help="list the analyzers and exit"
    )
    parser.add_argument(
        "-S",
        "--suppress",
        action="append",
        default=[],
        metavar="CODE=RESOURCE",
        help='suppress a code on resources matching a glob, e.g. "IST0102=Namespace *" (repeatable)',
    )
    parser.add_argument(
        "--meshConfigFile",
        "--mesh-config",
        dest="mesh_config",
        metavar="FILE",
        help="mesh config (Istio MeshConfig YAML) to analyze with",
    )
    parser.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="color levels in log output (default: auto)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print which analyzers ran or were skipped",
    )
    from pilotfish.cli.client import add_client_arguments

    add_client_arguments(parser)  # without files: the running mesh, through the control plane's API


# -- the running mesh ------------------------------------------------------------------------


def analyze_live(args: argparse.Namespace, names, suppress, failure, shown, out, err) -> int:
    """Without files: analyze the running mesh's configuration (the control plane's
    ``GET /api/v1/analyze``, which sees its Pods, Services and everything applied)."""
    import fnmatch

    from pilotfish.analyze import Level
    from pilotfish.cli.client import ApiError, Client

    if names or args.mesh_config:
        print("Error: --analyzer and --meshConfigFile need files (-f): the running mesh is analyzed "
              "with every default analyzer and its own mesh config", file=err)
        return EXIT_USAGE
    namespace = args.namespace or "default"
    try:
        res = Client.from_args(args).analyze(None if args.all_namespaces else namespace)
    except ApiError as e:
        if e.status == 0:  # no mesh to analyze: a usage error, as before there was a live mode
            print(f"Error: nothing to analyze: give files or directories (-f FILE|DIR), or run a mesh "
                  f"(pilotfish up) to analyze it ({e.message})", file=err)
            return EXIT_USAGE
        print(f"Error: {e.message}", file=err)
        return EXIT_DATA
    msgs = []
    for m in res.get("messages") or []:
        origin = str(m.get("origin") or "")
        if any(code == m.get("code") and fnmatch.fnmatchcase(origin, pat) for code, pat in suppress):
            continue
        msgs.append(m)
    printed = [m for m in msgs if Level.parse(str(m.get("level"))).at_least(shown)]
    plain = [{k: v for k, v in m.items() if k != "text"} for m in printed]
    fmt = "log" if args.output == "text" else args.output
    if fmt == "json":
        text = json.dumps(plain, indent="\t", ensure_ascii=False)
        print(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"), file=out)
    elif fmt == "yaml":
        import yaml

        out.write(yaml.safe_dump(plain, sort_keys=True, default_flow_style=False, allow_unicode=True))
    elif printed:
        color = _use_color(args.color, out)
        lines = []
        for m in printed:
            line = str(m.get("text") or m.get("message"))
            level = str(m.get("level"))
            if color and level in COLORS and line.startswith(level):
                line = f"{COLORS[level]}{level}\033[0m{line[len(level):]}"
            lines.append(line)
        print("\n".join(lines), file=out)
    target = "all namespaces" if args.all_namespaces else f"namespace: {namespace}"
    if not printed:
        print(f"\u2714 No validation issues found when analyzing {target}.", file=err)
    if any(Level.parse(str(m.get("level"))).at_least(failure) for m in msgs):
        print(f"Error: Analyzers found issues when analyzing {target}.", file=err)
        print(f"See {DOCS} for more information about causes and resolutions.", file=err)
        return EXIT_ISSUES
    return EXIT_OK


# -- inputs ----------------------------------------------------------------------------------


def gather_files(paths: Iterable[str], recursive: bool, err) -> list[str]:
    """Files named, and YAML/JSON files in directories (subdirectories with ``-R``), like
    istioctl. Raises FileNotFoundError for a path that does not exist."""
    out: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
        elif os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                if not recursive:
                    dirs.clear()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    if name.endswith(SUFFIXES):
                        out.append(full)
                    else:
                        print(
                            f"Skipping file {full}, recognized file extensions are: [{' '.join(SUFFIXES)}]",
                            file=err,
                        )
        elif os.path.exists(p):
            if p.endswith(SUFFIXES):
                out.append(p)
            else:
                print(
                    f"Skipping file {p}, recognized file extensions are: [{' '.join(SUFFIXES)}]",
                    file=err,
                )
        else:
            raise FileNotFoundError(p)
    return out


def read_resources(files: list[str], err) -> tuple[list[Resource], int]:
    """Parse every file; a file that does not parse is reported (file:line) and skipped."""
    resources: list[Resource] = []
    errors = 0
    for f in files:
        try:
            if f == "-":
                text = sys.stdin.read()
                name = "stdin"
            else:
                with open(f, encoding="utf-8") as fh:
                    text = fh.read()
                name = f
            resources.extend(load_text(text, name))
        except LoadError as e:
            errors += 1
            print(f"Error: {e}", file=err)
        except (OSError, UnicodeDecodeError) as e:
            errors += 1
            print(f"Error: {f}: cannot read: {getattr(e, 'strerror', None) or e}", file=err)
    return resources, errors


# -- output ----------------------------------------------------------------------------------


def _use_color(choice: str, out) -> bool:
    if choice != "auto":
        return choice == "always"
    if os.environ.get("TERM", "").lower() == "dumb":
        return False
    return bool(getattr(out, "isatty", lambda: False)())


def render_log(messages, color: bool) -> str:
    lines = []
    for msg in messages:
        text = str(msg)
        if color and str(msg.level) in COLORS:
            level = str(msg.level)
            text = f"{COLORS[level]}{level}\033[0m{text[len(level) :]}"
        lines.append(text)
    return "\n".join(lines)


def render_json(messages) -> str:
    text = json.dumps([msg.to_dict() for msg in messages], indent="\t", ensure_ascii=False)
    # Go's encoding/json escapes these for HTML safety; istioctl output has them escaped.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_yaml(messages) -> str:
    import yaml

    return yaml.safe_dump(
        [msg.to_dict() for msg in messages],
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
    )


def list_analyzers(out) -> None:
    from pilotfish.analyze import NOT_APPLICABLE, all_analyzers

    for name, a in all_analyzers().items():
        print(f"* {name}:", file=out)
        note = " (runs only when named with --analyzer)" if not a.default else ""
        note += " [Pilotfish]" if a.pilotfish else ""
        print(f"    {a.description}{note}", file=out)
    print("\nNot applicable to Pilotfish (accepted by --analyzer, never run):", file=out)
    for name, why in sorted(NOT_APPLICABLE.items()):
        print(f"* {name}:\n    {why}", file=out)


def _parse_suppress(values: list[str], err) -> list[tuple[str, str]] | None:
    from pilotfish.analyze import BY_CODE

    out = []
    for v in values:
        code, sep, res = v.partition("=")
        if not sep:
            print(f"Error: {v} is not a valid suppression value (CODE=RESOURCE)", file=err)
            return None
        if code not in BY_CODE:
            print(
                f"Warning: Supplied message code '{code}' is an unknown message code and will not have any effect.",
                file=err,
            )
        out.append((code, res))
    return out


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    from pilotfish.analyze import NOT_APPLICABLE, Level, all_analyzers, analyze
    from pilotfish.analyze.meshconfig import load_mesh_config

    if args.list_analyzers:
        list_analyzers(out)
        return EXIT_OK
    try:
        failure = Level.parse(args.failure_threshold)
        shown = Level.parse(args.output_threshold)
    except ValueError as e:
        print(f"Error: {e}", file=err)
        return EXIT_USAGE
    names: list[str] | None = None
    if args.analyzer:
        names = [n.strip() for v in args.analyzer for n in v.split(",") if n.strip()]
        known = all_analyzers()
        unknown = [n for n in names if n not in known and n not in NOT_APPLICABLE]
        if unknown:
            print(
                f"Error: unknown analyzer(s): {', '.join(unknown)}; see 'pilotfish analyze --list-analyzers'",
                file=err,
            )
            return EXIT_USAGE
    suppress = _parse_suppress(args.suppress, err)
    if suppress is None:
        return EXIT_USAGE
    paths = list(args.filename) + list(args.files)
    if not paths:
        return analyze_live(args, names, suppress, failure, shown, out, err)
    try:
        files = gather_files(paths, args.recursive, err)
    except FileNotFoundError as e:
        print(f"Error: {e.args[0]}: no such file or directory", file=err)
        return EXIT_DATA
    mesh = None
    if args.mesh_config:
        try:
            mesh = load_mesh_config(args.mesh_config)
        except (OSError, ValueError) as e:
            print(f"Error: mesh config {args.mesh_config}: {e}", file=err)
            return EXIT_DATA
    resources, parse_errors = read_resources(files, err)
    namespace = args.namespace or "default"
    result = analyze(
        resources,
        names,
        namespace=None if args.all_namespaces else namespace,
        default_namespace=namespace,
        istio_namespace=args.istio_namespace,
        mesh=mesh,
        suppress=suppress,
    )
    if args.verbose:
        target = "all namespaces" if args.all_namespaces else f"namespace: {namespace}"
        print(f"Analyzed resources in {target}", file=err)
        if result.skipped:
            print("Skipped analyzers:", file=err)
            for name, why in sorted(result.skipped.items()):
                print(f"\t {name}: {why}", file=err)
        print("Executed analyzers:", file=err)
        for name in result.executed:
            print(f"\t {name}", file=err)
        print(file=err)
    else:
        for name in names or ():
            if name in result.skipped:
                print(f"Note: analyzer {name} did not run: {result.skipped[name]}", file=err)
    printed = [msg for msg in result.messages if msg.level.at_least(shown)]
    fmt = "log" if args.output == "text" else args.output
    if fmt == "json":
        print(render_json(printed), file=out)
    elif fmt == "yaml":
        out.write(render_yaml(printed))
    elif printed:
        print(render_log(printed, _use_color(args.color, out)), file=out)
    target = "all namespaces" if args.all_namespaces else f"namespace: {namespace}"
    if not printed:
        if parse_errors == 0:
            print(
                f"\u2714 No validation issues found when analyzing {chr(10).join(files) or target}.",
                file=err,
            )
        else:
            word = "file" if parse_errors == 1 else "files"
            print(
                f"No validation issues found when analyzing {target} (but {parse_errors} {word} could not be parsed).",
                file=err,
            )
    if any(msg.level.at_least(failure) for msg in result.messages):
        print(f"Error: Analyzers found issues when analyzing {target}.", file=err)
        print(f"See {DOCS} for more information about causes and resolutions.", file=err)
        return EXIT_ISSUES
    if parse_errors:
        return EXIT_DATA
    return EXIT_OK
