"""serviceentry.ConflictingServiceEntryProtocolAnalyzer: ServiceEntries visible in the same
namespace must not give the same host and port different protocols (IST0177)."""

from __future__ import annotations

from .core import Context, Obj, analyzer
from .messages import m
from .util import EXPORT_ALL, as_dict, as_int, as_list, as_str, export_scopes


@analyzer(
    "serviceentry.ConflictingServiceEntryProtocolAnalyzer",
    "Checks if multiple ServiceEntries define the same host and port with different protocols",
    ("IST0177",),
)
def conflicting_protocols(ctx: Context) -> None:
    index: dict[tuple[str, str, int], list[tuple[str, Obj]]] = {}
    for se in ctx.all("ServiceEntry"):
        scopes = sorted(export_scopes(se.spec.get("exportTo"), se.ns))
        for scope in scopes:
            for h in as_list(se.spec.get("hosts")):
                for p in as_list(se.spec.get("ports")):
                    p = as_dict(p)
                    key = (scope, as_str(h), as_int(p.get("number")))
                    index.setdefault(key, []).append((as_str(p.get("protocol")).upper(), se))
    reported: set[int] = set()
    for (scope, host, port), entries in index.items():
        if scope != EXPORT_ALL:
            entries = entries + index.get((EXPORT_ALL, host, port), [])
        protocols = sorted({proto for proto, _ in entries})
        if len(protocols) < 2:
            continue
        names = sorted({se.full_name for _, se in entries})
        for _, se in entries:
            if id(se) in reported:
                continue
            reported.add(id(se))
            ctx.report(
                m("ConflictingServiceEntryProtocol"),
                se,
                ", ".join(names),
                host,
                port,
                ", ".join(protocols),
                path=("metadata", "name"),
            )
