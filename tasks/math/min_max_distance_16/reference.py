"""Min/max distance ratio: place 16 points in the plane so that (max distance / min distance)^2 is small.

Two functions, split by trust (see `evo/task.py`):

- `run_candidate(module)` runs in the sandbox next to the candidate: it calls
  `construct_points()` and turns what comes back into a float64 array.
- `evaluate(outputs)` runs in the trusted process: it checks everything again from scratch
  (key, shape, finiteness, distinct points) and never raises.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

N = 16
MIN_DISTANCE = 1e-12  # points closer than this count as coincident
NEAR = 1.05  # a nearest neighbour within 5% of the minimum distance is "at contact" (descriptor only)


# ----------------------------------------------------------------------------- sandbox side


def run_candidate(module: ModuleType) -> dict[str, np.ndarray]:
    """Call the candidate's `construct_points()` and return `{"points"}` as float64."""
    fn = getattr(module, "construct_points", None)
    if not callable(fn):
        raise TypeError("the program must define a function construct_points() -> array of shape (16, 2)")
    result = fn()
    try:
        points = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"construct_points() returned something that is not a numeric array: {e}") from e
    if points.shape != (N, 2):
        raise ValueError(f"construct_points() must return an array of shape ({N}, 2), got shape {points.shape}")
    return {"points": points}


# ----------------------------------------------------------------------------- trusted side


def _points(outputs: dict[str, Any]) -> np.ndarray:
    """Fetch `outputs["points"]` as a finite float64 (N, 2) array, or raise ValueError saying why."""
    if not isinstance(outputs, dict) or "points" not in outputs:
        raise ValueError("missing output 'points' (expected key: points)")
    raw = np.asarray(outputs["points"])
    if raw.dtype.kind not in "fiu":
        raise ValueError(f"points must be a real numeric array, got dtype {raw.dtype}")
    points = raw.astype(np.float64)
    if points.shape != (N, 2):
        raise ValueError(f"points must have shape ({N}, 2), got {points.shape}")
    bad = np.argwhere(~np.isfinite(points))
    if len(bad):
        raise ValueError(f"points contains NaN or inf (first at index {tuple(int(i) for i in bad[0])})")
    return points


def _distances(points: np.ndarray) -> np.ndarray:
    """Pairwise distances, with +inf on the diagonal; raise ValueError on coincident points."""
    dist = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    if not np.isfinite(dist[~np.eye(N, dtype=bool)]).all():
        raise ValueError("pairwise distances overflow float64; rescale the points")
    if dist.min() <= MIN_DISTANCE:
        i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
        raise ValueError(f"points {min(i, j)} and {max(i, j)} coincide (distance {dist[i, j]:.3g} "
                         f"<= {MIN_DISTANCE:g}); all {N} points must be distinct")
    return dist


def _metrics(points: np.ndarray, dist: np.ndarray) -> dict[str, float]:
    """The score and the two behaviour descriptors of a valid point set."""
    d_min = dist.min()
    ratio_squared = float((dist[np.isfinite(dist)].max() / d_min) ** 2)
    if not np.isfinite(ratio_squared):
        raise ValueError("the distance ratio overflows float64; rescale the points")
    nearest = dist.min(axis=1)
    spread = np.clip(np.linalg.eigvalsh(np.cov(points.T)), 0.0, None)  # principal variances, ascending
    return {
        "ratio_squared": ratio_squared,
        "contact_fraction": float((nearest <= NEAR * d_min).mean()),  # descriptor: how lattice-like
        "roundness": float(np.sqrt(spread[0] / spread[1])),  # descriptor: 1 round, towards 0 elongated
    }


def evaluate(outputs: dict[str, Any]) -> dict[str, Any]:
    """Validate the points and score them. Never raises: bad input gives `valid=False` and a reason."""
    try:
        with np.errstate(all="ignore"):  # overflow becomes inf, which the checks reject with a reason
            points = _points(outputs)
            metrics = _metrics(points, _distances(points))
    except Exception as e:  # anything wrong with untrusted output is a verdict, never a crash
        return {"valid": False, "metrics": {}, "error": str(e)}
    return {"valid": True, "metrics": metrics, "error": None}
