"""`evo task new NAME`: a working task folder of one's own, to edit into one's own problem.

The skeleton is a complete `math` task (place 12 points in the unit square, as far apart as possible) so
that `evo eval DIR/NAME DIR/NAME/seed.py` and `evo run DIR/NAME` work before anything is changed; every
file says what it is for, and `task.toml` shows every key with a comment.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from evo.errors import EvoError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

TASK_TOML = """\
# task.toml: what evo optimises, read by `evo tasks`, `evo eval` and `evo run`. Every key is here with a
# comment; a key evo does not know is an error that names it. The folder holds also reference.py (runs and
# scores a candidate), seed.py (the first program) and prompt.md (what an LLM operator is told).

# The task family: how a candidate runs and is scored. "math": a CPU program run once in a sandboxed
# process, its outputs scored by reference.py's `evaluate`. ("kernels" and "training" need the GPU harness.)
family = "math"
# One line shown where there is no prompt.md.
description = "Place 12 points in the unit square so that the smallest distance between two is as large as possible."
# "maximize" or "minimize" the metric.
objective = "maximize"
# The key of the `metrics` that reference.evaluate returns which is the score.
metric = "min_distance"

[evaluation]
timeout_s = 10          # wall-clock seconds one candidate may run; then its whole process tree is killed
memory_mb = 1024        # memory one candidate may allocate (MB)
max_output_mb = 16      # biggest file a candidate may write, its stdout and stderr included (MB)
min_improvement = 0.0   # a child replaces a cell's elite only when better by this fraction (for noisy scores)

# The behaviour axes of the MAP-Elites grid: each names another key of the metrics of reference.evaluate,
# its range and its number of bins. The search keeps the best program of every cell, so that different
# kinds of solution survive side by side. Remove both tables to let evo make cells from the code instead.
[[descriptors]]
name = "boundary_fraction"   # share of the points that lie on a side of the square
low = 0.0
high = 1.0
bins = 10

[[descriptors]]
name = "regularity"          # smallest over mean nearest-neighbour distance: 1 for a perfect lattice
low = 0.5
high = 1.0
bins = 10

# Values of the metric to compare with, shown by `evo tasks` (any names; numbers only).
[best_known]
grid_4x3 = 0.3333333333

# The auditor reads every candidate before it runs and refuses what could cheat a score. A task may allow
# checks it has no use for: here the score depends only on the outputs, checked afresh by evaluate, so
# reading the clock (a search that stops after N seconds) and module-level state cannot help a candidate.
[audit]
allow = ["sleep_and_clock", "module_state"]
"""

REFERENCE_PY = '''\
"""The reference of the task: two functions, split by trust (see evo/task.py).

- `run_candidate(module)` runs inside the sandbox, next to the untrusted candidate: it calls the candidate's
  entry point and returns its raw outputs as arrays.
- `evaluate(outputs)` runs in evo's trusted process on the outputs read back from the sandbox. It checks
  them from scratch (a candidate may return anything) and never raises: it returns
  {"valid": bool, "metrics": {name: float}, "error": str | None}, the metrics holding task.toml's `metric`
  and the `name` of every descriptor.

Change both for your problem; `evo eval . seed.py` (from this folder) tries them on the seed.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

N = 12
EDGE = 1e-6  # a point this close to a side of the square is on it (descriptor only)


# ----------------------------------------------------------------------------- sandbox side


def run_candidate(module: ModuleType) -> dict[str, np.ndarray]:
    """Call the candidate's `solve()` and return `{"points"}` as a float64 array."""
    solve = getattr(module, "solve", None)
    if not callable(solve):
        raise TypeError(f"the program must define solve() -> array of shape ({N}, 2)")
    points = np.asarray(solve(), dtype=np.float64)
    if points.shape != (N, 2):
        raise ValueError(f"solve() must return an array of shape ({N}, 2), got shape {points.shape}")
    return {"points": points}


# ----------------------------------------------------------------------------- trusted side


def _points(outputs: dict[str, Any]) -> np.ndarray:
    """`outputs["points"]` as a finite float64 (N, 2) array inside the unit square, or ValueError saying why."""
    if "points" not in outputs:
        raise ValueError("missing output 'points'")
    raw = np.asarray(outputs["points"])
    if raw.dtype.kind not in "fiu":
        raise ValueError(f"points must be a real numeric array, got dtype {raw.dtype}")
    points = raw.astype(np.float64)
    if points.shape != (N, 2):
        raise ValueError(f"points must have shape ({N}, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points contains NaN or inf")
    if points.min() < 0.0 or points.max() > 1.0:
        raise ValueError("every point must lie in the unit square [0, 1] x [0, 1]")
    return points


def evaluate(outputs: dict[str, Any]) -> dict[str, Any]:
    """Validate the points and score them. Never raises: bad output gives `valid=False` and a reason."""
    try:
        points = _points(outputs)
        dist = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(dist, np.inf)
        nearest = dist.min(axis=1)
        if nearest.min() <= 0.0:
            raise ValueError("two points coincide")
        on_edge = (np.minimum(points, 1.0 - points) <= EDGE).any(axis=1)
        metrics = {
            "min_distance": float(nearest.min()),  # the score
            "boundary_fraction": float(on_edge.mean()),  # descriptor
            "regularity": float(nearest.min() / nearest.mean()),  # descriptor
        }
    except Exception as e:  # anything wrong with untrusted output is a verdict, never a crash
        return {"valid": False, "metrics": {}, "error": str(e)}
    return {"valid": True, "metrics": metrics, "error": None}
'''

SEED_PY = '''\
"""Place 12 points in the unit square so that the smallest distance between two of them is as large as
possible.

A naive start: the points on a grid, then random local search: move one point a little and keep the move
whenever the smallest distance does not shrink. evo evolves this file; lines such as
`COLS = 4  # evo: int(2, 6)` declare parameters that the search varies within their range, and
`# evo: fixed` marks a number it must leave alone (the `constants` operator nudges any other number).
"""

import numpy as np

N = 12              # evo: fixed (the task asks for 12 points)
LOW = 0.0           # evo: fixed (the square's sides)
HIGH = 1.0          # evo: fixed

COLS = 4            # evo: int(2, 6)
STEPS = 300         # evo: int(0, 3000)
STEP_SIZE = 0.05    # evo: float(0.001, 0.3)
SEED = 0            # evo: int(0, 9999)


def min_distance(points: np.ndarray) -> float:
    """The smallest distance between two of the points."""
    x, y = points.T
    d = np.hypot(x[:, None] - x, y[:, None] - y)
    return float(d[~np.eye(len(points), dtype=bool)].min())


def grid() -> np.ndarray:
    """N points on a grid of COLS columns spanning the square, filled row by row."""
    rows = -(-N // COLS)  # ceil(N / COLS): at least 2 for COLS up to 6
    xs, ys = np.linspace(LOW, HIGH, COLS), np.linspace(LOW, HIGH, rows)
    return np.array([(x, y) for y in ys for x in xs][:N])


def improve(points: np.ndarray) -> np.ndarray:
    """Random local search inside the square."""
    rng = np.random.default_rng(SEED)
    best = min_distance(points)
    for _ in range(STEPS):
        trial, i = points.copy(), rng.integers(N)
        trial[i] += rng.normal(0.0, STEP_SIZE, size=trial[i].shape)
        trial = np.clip(trial, LOW, HIGH)
        score = min_distance(trial)
        if score >= best:
            points, best = trial, score
    return points


def solve() -> np.ndarray:
    """Return the N points as an array of shape (N, 2)."""
    return improve(grid())
'''

PROMPT_MD = """\
# 12 points in the unit square, as far apart as possible

Place 12 points in the unit square [0, 1] x [0, 1] so that the smallest distance between two of them is
as large as possible. The score is that smallest distance; **higher is better**.

## What your program must define

```python
def solve() -> numpy.ndarray:
    ...
    return points   # shape (12, 2): one (x, y) row per point
```

## Validation

- the shape is exactly (12, 2) and every value is finite;
- every point lies in the square (0 <= x, y <= 1);
- the distances are recomputed from the points you return.

A 4 x 3 grid gives 1/3.

## Rules

- Python with `numpy` only (the standard library is fine); no network, no files, no subprocesses.
- It must finish within the 10 s time limit and 1 GiB of memory; seed any random generator.

## Ideas

Optimal sets put many points on the sides of the square and many pairs at exactly the smallest distance.
Optimise all points together (a smooth surrogate of the minimum, or a penalty method), restart from
several starting sets, keep the best, and finish with a careful local polish.
"""

FILES = {"task.toml": TASK_TOML, "reference.py": REFERENCE_PY, "seed.py": SEED_PY, "prompt.md": PROMPT_MD}


def write_skeleton(parent: Path, name: str) -> Path:
    """Write the skeleton into `parent/name` (created; `parent` too if missing) and return that folder.

    Refuses a name that is no plain folder name and a folder (or file) that exists already."""
    if not _NAME.match(name):
        raise EvoError(f"task name {name!r} is not a plain folder name: use letters, digits, '_', '-' and '.' "
                       "(e.g. `evo task new my_task --dir DIR`)")
    parent = Path(parent)
    folder = parent / name
    if folder.exists() or folder.is_symlink():
        raise EvoError(f"{folder} exists already: evo task new never overwrites; choose another name or --dir")
    if parent.exists() and not parent.is_dir():
        raise EvoError(f"--dir {parent} is a file, not a folder: give the folder in which to create {name}/")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()  # fails if another process made it meanwhile: still never overwrites
    except FileExistsError:
        raise EvoError(f"{folder} exists already: evo task new never overwrites; choose another name or --dir") from None
    except OSError as e:
        raise EvoError(f"cannot create {folder}: {e.strerror or e}; choose a writable --dir") from e
    try:
        for filename, text in FILES.items():
            (folder / filename).write_text(text)
    except OSError as e:
        shutil.rmtree(folder, ignore_errors=True)  # no half-written task left behind
        raise EvoError(f"cannot write {folder / filename}: {e.strerror or e}") from e
    return folder.resolve()
