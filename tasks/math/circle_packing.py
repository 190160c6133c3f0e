"""Circle packing in the unit square: n disjoint circles, maximise the sum of their radii.

Shared by `circle_packing_26` and `circle_packing_32`, whose `reference.py` fix n. Two
functions, split by trust (see `evo/task.py`):

- `run_candidate(module)` runs in the sandbox next to the candidate: it calls
  `construct_packing()` and turns what comes back into float64 arrays.
- `evaluate(outputs, n)` runs in the trusted process: it checks everything again from scratch
  (keys, shapes, finiteness, containment, disjointness) and never raises.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

TOL = 1e-9  # slack allowed on every containment and disjointness constraint
TOUCH = 1e-3  # a circle closer than this to a side counts as touching it (descriptor only)


# ----------------------------------------------------------------------------- sandbox side


def run_candidate(module: ModuleType) -> dict[str, np.ndarray]:
    """Call the candidate's `construct_packing()` and return `{"centers", "radii"}` as float64."""
    fn = getattr(module, "construct_packing", None)
    if not callable(fn):
        raise TypeError("the program must define a function construct_packing() -> (centers, radii)")
    result = fn()
    if not isinstance(result, tuple | list) or len(result) != 2:
        got = type(result).__name__ + (f" of length {len(result)}" if isinstance(result, tuple | list) else "")
        raise ValueError(f"construct_packing() must return a tuple (centers, radii), got a {got}")
    outputs = {}
    for name, value in zip(("centers", "radii"), result, strict=True):
        try:
            outputs[name] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"construct_packing() returned {name} that is not a numeric array: {e}") from e
    return outputs


# ----------------------------------------------------------------------------- trusted side


def _as_array(outputs: dict[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """Fetch `outputs[key]` as a finite float64 array of `shape`, or raise ValueError saying why."""
    if key not in outputs:
        raise ValueError(f"missing output {key!r} (expected keys: centers, radii)")
    raw = np.asarray(outputs[key])
    if raw.dtype.kind not in "fiu":
        raise ValueError(f"{key} must be a real numeric array, got dtype {raw.dtype}")
    arr = raw.astype(np.float64)
    if arr.shape != shape:
        raise ValueError(f"{key} must have shape {shape}, got {arr.shape}")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        raise ValueError(f"{key} contains NaN or inf (first at index {tuple(int(i) for i in bad[0])})")
    return arr


def _check_packing(centers: np.ndarray, radii: np.ndarray) -> None:
    """Raise ValueError naming the worst violated constraint, if any."""
    if (radii < 0).any():
        i = int(np.argmin(radii))
        raise ValueError(f"circle {i} has a negative radius ({radii[i]:.6g}); radii must be >= 0")
    # Containment: x - r >= -TOL and x + r <= 1 + TOL, same for y.
    out = np.maximum(radii[:, None] - centers, centers + radii[:, None] - 1.0)  # how far past a side
    if (out > TOL).any():
        i, axis = np.unravel_index(int(np.argmax(out)), out.shape)
        raise ValueError(f"circle {i} sticks out of the unit square along {'xy'[axis]} by "
                         f"{out[i, axis]:.3g} (tolerance {TOL:g})")
    # Disjointness: |c_i - c_j| >= r_i + r_j - TOL for every pair.
    dist = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1))
    overlap = radii[:, None] + radii[None, :] - dist
    np.fill_diagonal(overlap, -np.inf)
    if (overlap > TOL).any():
        i, j = np.unravel_index(int(np.argmax(overlap)), overlap.shape)
        count = int((overlap > TOL).sum()) // 2
        raise ValueError(f"circle {min(i, j)} overlaps circle {max(i, j)} by {overlap[i, j]:.3g} "
                         f"(tolerance {TOL:g}; {count} overlapping pair(s) in all)")


def _metrics(centers: np.ndarray, radii: np.ndarray) -> dict[str, float]:
    """The score and the two behaviour descriptors of a valid packing."""
    gap = np.minimum(centers - radii[:, None], 1.0 - centers - radii[:, None]).min(axis=1)
    return {
        "sum_radii": float(radii.sum()),
        "radius_std": float(radii.std()),  # descriptor: equal circles (0) vs mixed sizes
        "boundary_fraction": float((gap <= TOUCH).mean()),  # descriptor: share of circles on a side
    }


def evaluate(outputs: dict[str, Any], n: int) -> dict[str, Any]:
    """Validate a packing and score it. Never raises: bad input gives `valid=False` and a reason."""
    try:
        if not isinstance(outputs, dict):
            raise ValueError(f"outputs must be a dict, got {type(outputs).__name__}")
        with np.errstate(all="ignore"):  # huge values overflow to inf and fail the checks with a reason
            centers = _as_array(outputs, "centers", (n, 2))
            radii = _as_array(outputs, "radii", (n,))
            _check_packing(centers, radii)
            metrics = _metrics(centers, radii)
    except Exception as e:  # anything wrong with untrusted output is a verdict, never a crash
        return {"valid": False, "metrics": {}, "error": str(e)}
    return {"valid": True, "metrics": metrics, "error": None}
