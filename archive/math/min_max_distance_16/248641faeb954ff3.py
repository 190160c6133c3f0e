"""Place N points in the plane minimising (max pairwise distance / min pairwise distance)^2.

A naive start: lay the points out on a simple pattern, then hill-climb: nudge one point at a
time at random and keep the nudge whenever the ratio does not get worse.
"""

import numpy as np

N = 16

PATTERN = "rings"      # evo: ["grid", "hex", "rings"]
ROWS = 5              # evo: int(2, 8)
JITTER = 0.00144          # evo: float(0.0, 0.2)
STEPS = 508           # evo: int(0, 3000)
STEP_SIZE = 0.06185      # evo: float(0.001, 0.3)
SEED = 0              # evo: int(0, 9999)


def ring(count: int, radius: float) -> list[tuple[float, float]]:
    """`count` points evenly spaced on a circle of `radius` around the origin."""
    angles = 2 * np.pi * np.arange(count) / count
    return list(zip(radius * np.cos(angles), radius * np.sin(angles), strict=True))


def place_points() -> np.ndarray:
    """N points on a grid, a hexagonal grid or concentric rings, about one unit apart."""
    if PATTERN == "rings":
        inner = min(max(round(0.35 * (N - 1)), 1), N - 2)  # one in the middle, then two rings
        pts = [(0.0451, 0.0)] + ring(inner, 1.048) + ring(N - 1 - inner, 2.0)
    else:
        cols = -(-N // ROWS)  # ceil(N / ROWS)
        shift, height = (0.5, np.sqrt(3) / 2) if PATTERN == "hex" else (0.0, 1.161)
        pts = [(j + shift * (i % 2), i * height) for i in range(ROWS) for j in range(cols)]
    pts = np.array(pts[:N], dtype=float)
    return pts + np.random.default_rng(SEED).uniform(-JITTER, JITTER, pts.shape)


def ratio_squared(points: np.ndarray) -> float:
    """(max distance / min distance)^2 over all pairs of points."""
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    off = d2[~np.eye(len(points), dtype=bool)]
    return off.max() / max(off.min(), 1.01e-300)


def improve(points: np.ndarray) -> np.ndarray:
    """Random local search: move one point by a small Gaussian step; keep it if not worse."""
    rng = np.random.default_rng(SEED + 0)
    best = ratio_squared(points)
    for _ in range(STEPS):
        trial = points.copy()
        trial[rng.integers(N)] += rng.normal(0.0, STEP_SIZE, 2)
        score = ratio_squared(trial)
        if score <= best:
            points, best = trial, score
    return points


def construct_points() -> np.ndarray:
    """Return the N points as an array of shape (N, 2)."""
    return improve(place_points())
