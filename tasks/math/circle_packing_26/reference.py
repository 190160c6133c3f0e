"""Circle packing of 26 circles in the unit square; the checks are in `../circle_packing.py`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location("evo_circle_packing", Path(__file__).parent.parent / "circle_packing.py")
assert _spec is not None and _spec.loader is not None
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)

N = 26
run_candidate = _shared.run_candidate


def evaluate(outputs: dict[str, Any]) -> dict[str, Any]:
    """Validate and score a packing of exactly 26 circles (trusted side)."""
    return _shared.evaluate(outputs, N)
