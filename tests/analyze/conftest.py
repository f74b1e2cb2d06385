"""Shared helpers for the analyzer tests: Istio's test data lives beside the repository."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pilotfish.analyze import analyze
from pilotfish.api.loader import load_text

# shared/ sits next to the repository checkout (here and in CI).
SHARED_ISTIO = (Path(__file__).resolve().parents[2] / ".." / "shared" / "istio").resolve()
ANALYZE_DATA = SHARED_ISTIO / "analyze"
BOOKINFO = SHARED_ISTIO / "bookinfo"

needs_shared = pytest.mark.skipif(
    not ANALYZE_DATA.is_dir(), reason=f"Istio test data not found at {SHARED_ISTIO}"
)


def run(yaml_text: str, *analyzers: str, **kw):
    """Analyze a YAML snippet with the named analyzers (harness defaults: no default
    namespace, workloads and services known); returns the messages."""
    kw.setdefault("default_namespace", "")
    kw.setdefault("workloads_known", True)
    kw.setdefault("services_known", True)
    return analyze(load_text(yaml_text, "t.yaml"), list(analyzers) or None, **kw).messages


def pairs(messages) -> Counter:
    return Counter((m.code, m.resource) for m in messages)
