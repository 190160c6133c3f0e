"""The CPU math tasks: seeds run and score, validators reject every kind of bad output."""

from __future__ import annotations

import types

import numpy as np
import pytest

from evo.task import Task, load_module, load_task

CIRCLE_TASKS = {"math/circle_packing_26": 26, "math/circle_packing_32": 32}
ALL_TASKS = [*CIRCLE_TASKS, "math/min_max_distance_16"]
# Plausible raw metric range for each naive seed: valid, clearly below the published best.
SEED_RANGE = {
    "math/circle_packing_26": (2.0, 2.4),
    "math/circle_packing_32": (2.0, 2.7),
    "math/min_max_distance_16": (13.0, 30.0),
}


@pytest.fixture(scope="module", params=ALL_TASKS)
def task(request: pytest.FixtureRequest) -> Task:
    return load_task(request.param)


def run_seed(task: Task) -> dict[str, np.ndarray]:
    module = load_module(task.seed_paths()[0], "seed_under_test")
    return task.reference.run_candidate(module)


def candidate(**functions: object) -> types.ModuleType:
    """A stand-in candidate module defining the given functions."""
    module = types.ModuleType("candidate")
    module.__dict__.update(functions)
    return module


# ----------------------------------------------------------------------------- every task


def test_config_is_complete(task: Task) -> None:
    cfg = task.config
    assert cfg.metric in ("sum_radii", "ratio_squared")
    assert len(cfg.descriptors) == 2
    assert cfg.best_known and cfg.timeout_s <= 30 and cfg.memory_mb >= 512
    assert "numpy" in task.prompt() and str(next(iter(cfg.best_known.values())))[:5] in task.prompt()


def test_seed_is_valid_and_scores_plausibly(task: Task) -> None:
    outcome = task.score_outputs(run_seed(task))
    assert outcome.valid, outcome.error
    value = outcome.metrics[task.config.metric]
    low, high = SEED_RANGE[task.name]
    assert low <= value <= high
    assert outcome.score == task.orient(value)
    best = next(iter(task.config.best_known.values()))
    assert outcome.score < task.orient(best)  # headroom left for the search
    for spec, v in zip(task.config.descriptors, outcome.descriptors, strict=True):
        assert spec.low <= v <= spec.high, (spec.name, v)


def test_malformed_outputs_are_rejected_without_raising(task: Task) -> None:
    good = run_seed(task)
    key = "points" if "points" in good else "centers"
    cases = [
        {},
        {k: v for k, v in good.items() if k != key},
        {**good, key: good[key][:-1]},
        {**good, key: good[key].T},
        {**good, key: good[key].astype(str)},
        {**good, key: np.zeros_like(good[key], dtype=object)},
        "not a dict",
    ]
    for outputs in cases:
        result = task.reference.evaluate(outputs)
        assert result["valid"] is False and result["error"], outputs
        assert not task.score_outputs(outputs).valid


def test_non_finite_values_are_rejected(task: Task) -> None:
    good = run_seed(task)
    key = "points" if "points" in good else "centers"
    for bad in (np.nan, np.inf, -np.inf):
        arr = good[key].copy()
        arr[3, 1] = bad
        result = task.reference.evaluate({**good, key: arr})
        assert not result["valid"] and "NaN or inf" in result["error"]


# ----------------------------------------------------------------------------- circle packing


def grid_packing(n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` equal circles on a grid whose horizontal neighbours touch exactly (and touch the walls)."""
    cols = 6 if n == 26 else 8
    rows = -(-n // cols)
    r = 1 / (2 * cols)
    centers = np.array([((2 * j + 1) * r, (i + 0.5) / rows) for i in range(rows) for j in range(cols)])[:n]
    return centers, np.full(n, r)


@pytest.mark.parametrize("name", CIRCLE_TASKS)
def test_touching_circles_are_accepted(name: str) -> None:
    task = load_task(name)
    centers, radii = grid_packing(CIRCLE_TASKS[name])
    # nudge circle 1 so it overlaps circle 0 by 1e-10: inside the 1e-9 tolerance
    centers[1, 0] -= 1e-10
    outcome = task.score_outputs({"centers": centers, "radii": radii})
    assert outcome.valid, outcome.error
    assert outcome.metrics["sum_radii"] == pytest.approx(radii.sum())
    assert outcome.metrics["boundary_fraction"] > 0


@pytest.mark.parametrize("name", CIRCLE_TASKS)
def test_invalid_packings_are_rejected(name: str) -> None:
    task = load_task(name)
    n = CIRCLE_TASKS[name]
    centers, radii = grid_packing(n)

    def error(c: np.ndarray, r: np.ndarray) -> str:
        result = task.reference.evaluate({"centers": c, "radii": r})
        assert result["valid"] is False
        assert not task.score_outputs({"centers": c, "radii": r}).valid
        return result["error"]

    c = centers.copy()
    c[0, 0] = radii[0] - 1e-6  # sticks out of the left side by 1e-6 (and moves away from circle 1)
    assert "circle 0 sticks out" in error(c, radii)

    c = centers.copy()
    c[1, 0] -= 1e-6  # overlaps circle 0 by 1e-6, clears circle 2
    assert "circle 0 overlaps circle 1 by 1e-06" in error(c, radii)

    r = radii.copy()
    r[5] = -1e-3
    assert "negative radius" in error(centers, r)

    r = radii.copy()
    r[2] = np.inf
    assert "NaN or inf" in error(centers, r)

    assert "shape" in error(centers, radii[:-1])
    assert "shape" in error(centers[:, :1], radii)

    # The hack reported against OpenEvolve: radii inflated to claim a sum of 4.01 with overlaps.
    hacked = np.full(n, 4.01 / n)
    assert hacked.sum() == pytest.approx(4.01)
    assert "overlap" in error(np.clip(centers, hacked[0], 1 - hacked[0]), hacked)


@pytest.mark.parametrize("name", CIRCLE_TASKS)
def test_run_candidate_rejects_malformed_returns(name: str) -> None:
    task = load_task(name)
    centers, radii = grid_packing(CIRCLE_TASKS[name])
    run = task.reference.run_candidate
    with pytest.raises(ValueError, match=r"tuple \(centers, radii\).*length 3"):
        run(candidate(construct_packing=lambda: (centers, radii, 0.0)))
    with pytest.raises(ValueError, match="tuple"):
        run(candidate(construct_packing=lambda: radii))
    with pytest.raises(ValueError, match="not a numeric array"):
        run(candidate(construct_packing=lambda: ([[0.1, 0.2], [0.3]], radii)))
    with pytest.raises(TypeError, match="construct_packing"):
        run(candidate(something_else=lambda: None))
    outputs = run(candidate(construct_packing=lambda: (centers.tolist(), list(radii))))
    assert outputs["centers"].dtype == np.float64 and outputs["radii"].shape == radii.shape


# ----------------------------------------------------------------------------- min/max distance


def hexagonal_patch() -> np.ndarray:
    """16 points of the hexagonal lattice in rows of 3, 4, 5 and 4: ratio^2 = 16."""
    rows = [3, 4, 5, 4]
    return np.array([(j - n / 2, i * np.sqrt(3) / 2) for i, n in enumerate(rows) for j in range(n)])


def test_min_max_distance_scores_and_orientation() -> None:
    task = load_task("math/min_max_distance_16")
    grid = np.array([(i, j) for i in range(4) for j in range(4)], dtype=float)
    square, hexa = task.score_outputs({"points": grid}), task.score_outputs({"points": hexagonal_patch()})
    assert square.valid and hexa.valid
    assert square.metrics["ratio_squared"] == pytest.approx(18.0)
    assert square.score == pytest.approx(-18.0)
    # a lower ratio is a higher (better) oriented score
    assert hexa.metrics["ratio_squared"] == pytest.approx(16.0)
    assert hexa.score > square.score
    # the ratio depends only on shape: scaled, rotated, shifted points score the same
    turn = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    moved = task.score_outputs({"points": 123.0 * grid @ turn.T + 5.0})
    assert moved.score == pytest.approx(square.score)


def test_min_max_distance_rejects_bad_points() -> None:
    task = load_task("math/min_max_distance_16")
    grid = np.array([(i, j) for i in range(4) for j in range(4)], dtype=float)

    coincident = grid.copy()
    coincident[7] = coincident[3]
    result = task.reference.evaluate({"points": coincident})
    assert not result["valid"] and "points 3 and 7 coincide" in result["error"]

    nearly = grid.copy()
    nearly[7] = nearly[3] + 1e-13
    assert not task.reference.evaluate({"points": nearly})["valid"]

    assert "shape" in task.reference.evaluate({"points": grid[:15]})["error"]
    assert "missing" in task.reference.evaluate({"centers": grid})["error"]
    assert not task.score_outputs({"points": np.full((16, 2), 1e200) * np.arange(32).reshape(16, 2)}).valid


def test_min_max_distance_run_candidate_rejects_malformed_returns() -> None:
    run = load_task("math/min_max_distance_16").reference.run_candidate
    grid = np.array([(i, j) for i in range(4) for j in range(4)], dtype=float)
    with pytest.raises(ValueError, match=r"shape \(16, 2\)"):
        run(candidate(construct_points=lambda: (grid, grid)))
    with pytest.raises(ValueError, match=r"shape \(16, 2\)"):
        run(candidate(construct_points=lambda: grid[:10]))
    with pytest.raises(ValueError, match="not a numeric array"):
        run(candidate(construct_points=lambda: [[0.0, 1.0], [2.0]]))
    with pytest.raises(TypeError, match="construct_points"):
        run(candidate())
    assert run(candidate(construct_points=grid.tolist))["points"].dtype == np.float64
