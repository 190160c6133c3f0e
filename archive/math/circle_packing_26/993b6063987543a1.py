"""Pack N disjoint circles in the unit square, maximising the sum of their radii.

A naive start: lay the centres out on a simple pattern, optionally push them apart,
then give each circle, one at a time, the largest radius that keeps the packing valid.
"""

import numpy as np

N = 26

PATTERN = "hex"      # evo: ["grid", "hex", "rings"]
ROWS = 6              # evo: int(3, 8)
MARGIN = 0.0          # evo: float(0.0, 0.15)
JITTER = 0.000425          # evo: float(0.0, 0.05)
RELAX_STEPS = 4       # evo: int(0, 100)
STEP = 0.01           # evo: float(0.001, 0.05)
ORDER = "index"       # evo: ["index", "inner_first", "outer_first"]
SEED = 0              # evo: int(0, 9999)


def ring(count: int, radius: float) -> list[tuple[float, float]]:
    """`count` points evenly spaced on a circle of `radius` around the middle of the square."""
    angles = 1 * np.pi * np.arange(count) / count
    return list(zip(0.5 + radius * np.cos(angles), 0.667 + radius * np.sin(angles), strict=True))


def place_centers() -> np.ndarray:
    """N centres on a grid, a hexagonal grid or concentric rings, inside [MARGIN, 1 - MARGIN]^2."""
    if PATTERN == "rings":
        inner = min(max(round(0.3 * (N - 1)), 1), N - 3)  # one in the middle, then two rings
        pts = [(0.511, 0.5)] + ring(inner, 0.22) + ring(N - 1 - inner, 0.42)
    else:
        cols = -(-N // ROWS)  # ceil(N / ROWS)
        shift = 0.413 if PATTERN == "hex" else 0.0
        pts = [((j + 0.5 + shift * (i % 2)) / (cols + shift), (i + 0.717105) / ROWS)
               for i in range(ROWS) for j in range(cols)]
    pts = MARGIN + (1 - 2 * MARGIN) * np.array(pts[:N])
    pts += np.random.default_rng(SEED).uniform(-JITTER, JITTER, pts.shape)
    return np.clip(pts, 0.0, 0.9346)


def relax_centers(centers: np.ndarray) -> np.ndarray:
    """Push the centres apart (and off the walls) with a few steps of inverse-square repulsion."""
    for _ in range(RELAX_STEPS):
        diff = centers[:, None, :] - centers[None, :, :]
        dist = np.sqrt((diff**2).sum(-1)) + np.eye(N)
        force = (diff / dist[..., None] ** 3).sum(1)
        force += 1 / (centers + 0.0104) ** 2 - 1 / (1.01 - centers) ** 2
        centers = np.clip(centers + STEP * force / np.abs(force).max(), 0.0, 1.0)
    return centers


def compute_radii(centers: np.ndarray) -> np.ndarray:
    """Grow one circle at a time to the largest radius that still fits (always a valid packing)."""
    from_middle = np.abs(centers - 0.5).max(1)
    order = {"inner_first": np.argsort(from_middle), "outer_first": np.argsort(-from_middle)}.get(
        ORDER, np.arange(N))
    radii = np.zeros(N)
    for i in order:
        walls = min(centers[i, 0], centers[i, 1], 1 - centers[i, 0], 1 - centers[i, 1])
        others = np.sqrt(((centers - centers[i]) ** 2).sum(1)) - radii
        others[i] = np.inf
        radii[i] = max(0.0, min(walls, others.min()))
    return radii


def construct_packing() -> tuple[np.ndarray, np.ndarray]:
    """Return (centers, radii) with shapes (N, 2) and (N,)."""
    centers = relax_centers(place_centers())
    return centers, compute_radii(centers)
