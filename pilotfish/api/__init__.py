"""User-facing resources: Kubernetes core kinds and Istio's kinds, parsed and validated.

The main entry points (imported lazily, so ``pilotfish.api.loader`` stays cheap to import):

- :func:`load_text`, :func:`load_file`, :func:`load_paths` -> :class:`Resource` (``loader``)
- :func:`parse` / :func:`try_parse` -> typed objects (``parsing``; models in ``types``)
- :func:`validate` / :func:`validate_all` / :func:`check` -> :class:`Issue` lists (``validation``)
- the kind registry: :data:`KINDS`, :func:`lookup`, :func:`resolve` (``kinds``)
- :func:`parse_duration` (``duration``)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Resource": "pilotfish.api.loader",
    "LoadError": "pilotfish.api.loader",
    "load_text": "pilotfish.api.loader",
    "load_file": "pilotfish.api.loader",
    "load_paths": "pilotfish.api.loader",
    "Issue": "pilotfish.api.issues",
    "FieldPath": "pilotfish.api.issues",
    "parse": "pilotfish.api.parsing",
    "try_parse": "pilotfish.api.parsing",
    "ParseError": "pilotfish.api.parsing",
    "validate": "pilotfish.api.validation",
    "validate_all": "pilotfish.api.validation",
    "check": "pilotfish.api.validation",
    "Checked": "pilotfish.api.validation",
    "KINDS": "pilotfish.api.kinds",
    "KindInfo": "pilotfish.api.kinds",
    "lookup": "pilotfish.api.kinds",
    "resolve": "pilotfish.api.kinds",
    "parse_duration": "pilotfish.api.duration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pilotfish.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
