from pathlib import Path

import pytest

from pilotfish.api.loader import load_text

# shared/ sits beside the repository checkout (here and in CI).
SHARED_ISTIO = (Path(__file__).resolve().parents[2] / ".." / "shared" / "istio").resolve()
BOOKINFO = SHARED_ISTIO / "bookinfo"
SAMPLES = SHARED_ISTIO / "samples"

needs_shared = pytest.mark.skipif(not BOOKINFO.is_dir(), reason=f"Istio samples not found at {SHARED_ISTIO}")


def one(text: str, file: str = "t.yaml"):
    """The single resource of a YAML text."""
    (res,) = load_text(text, file)
    return res
