"""Walking a VirtualService's routes: destinations and mirrors, with the path of each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .core import Path
from .util import as_dict, as_int, as_list

ROUTE_KINDS = ("tcp", "tls", "http")


def route_destinations(
    spec: dict[str, Any],
) -> Iterator[tuple[str, int, int, dict[str, Any], Path]]:
    """(kind, rule index, route index, destination, path of destination.host) for every
    ``route[].destination`` of the tcp, tls and http rules, in Istio's order."""
    for kind in ROUTE_KINDS:
        for i, rule in enumerate(as_list(spec.get(kind))):
            for j, rd in enumerate(as_list(as_dict(rule).get("route"))):
                dest = as_dict(as_dict(rd).get("destination"))
                yield kind, i, j, dest, ("spec", kind, i, "route", j, "destination", "host")


def mirror_destinations(spec: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any], Path]]:
    """(http rule index, mirror destination, path) for ``mirror`` and ``mirrors[].destination``."""
    for i, rule in enumerate(as_list(spec.get("http"))):
        rule = as_dict(rule)
        if isinstance(rule.get("mirror"), dict):
            yield i, rule["mirror"], ("spec", "http", i, "mirror", "host")
        for j, mr in enumerate(as_list(rule.get("mirrors"))):
            dest = as_dict(as_dict(mr).get("destination"))
            yield i, dest, ("spec", "http", i, "mirrors", j, "destination", "host")


def has_port(dest: dict[str, Any]) -> bool:
    return isinstance(dest.get("port"), dict)


def port_number(dest: dict[str, Any]) -> int:
    return as_int(as_dict(dest.get("port")).get("number"))
