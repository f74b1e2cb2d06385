"""The control plane: the configuration view, ``translate()``, discovery, the HTTP API.

- :class:`~pilotfish.controlplane.view.ConfigView`: one immutable view of the configuration;
- :func:`~pilotfish.controlplane.translate.translate`: ``(view, registry, node) ->
  ProxyConfig``, a pure function (see ``docs/reference/translation.md``).

Names are imported lazily so that importing one part (the discovery server, the API) does not
load the others. ``translate`` lives in its own package: ``from pilotfish.controlplane.translate
import translate``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigView": "pilotfish.controlplane.view",
    "Entry": "pilotfish.controlplane.view",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pilotfish.controlplane' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
