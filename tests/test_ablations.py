"""The baselines that keep a search honest, on real runs: `best-of-n` makes every child from the seeds only;
`random-parent` draws parents among all valid programs, admitted to the archive or not; both are stored in the
run's config (for a report to set beside the search on the same budget) and kept across a resume."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError
from evo.store import Store

TASK = "math/circle_packing_26"


def _run(run_dir: Path, budget: int, **kw: object) -> None:
    engine = Engine.create(run_dir, RunConfig.from_dict({"task": TASK, "budget": budget, "workers": 1, "seed": 2,
                                                          **kw}))
    asyncio.run(engine.run_async())
    engine.close()


def _parents(store: Store) -> list[str]:
    return [pid for p in store.iter_programs(statuses=["evaluated", "failed"]) for pid in p.parents]


def test_best_of_n_makes_children_of_the_seeds_only_and_keeps_to_it_on_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "bon"
    _run(run_dir, 16, ablation="best-of-n")
    engine = Engine.open(run_dir, {"budget": 24})
    asyncio.run(engine.run_async())
    engine.close()
    store = Store.in_dir(run_dir, readonly=True)
    assert store.count_evaluations() == 24 and store.get_meta("config")["ablation"] == "best-of-n"
    seeds = {p.id for p in store.iter_programs() if p.operator == "seed"}
    parents = _parents(store)
    assert len(parents) >= 20 and set(parents) <= seeds  # never an archive parent, before or after the resume
    # Children that beat their seed were admitted to the archive all the same: the archive is kept, unused.
    assert len({pid for _, _, _, pid, _ in store.events("admitted")} - seeds) > 0
    store.close()


@pytest.mark.slow  # tens of seconds on 2 cores: `make test-slow` (make test stays within CI's 20 minutes)
def test_random_parent_draws_programs_that_map_elites_never_would(tmp_path: Path) -> None:
    run_dir = tmp_path / "random"
    result = subprocess.run([sys.executable, "-m", "evo", "run", TASK, "--run-dir", str(run_dir), "--budget", "40",
                             "--workers", "1", "--ablation", "random-parent", "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    _run(tmp_path / "search", 40)
    for name, expect_outsiders in (("random", True), ("search", False)):
        store = Store.in_dir(tmp_path / name, readonly=True)
        admitted = {pid for _, _, _, pid, _ in store.events("admitted")}
        valid = {p.id for p in store.iter_programs(statuses=["evaluated"]) if p.score is not None}
        parents = set(_parents(store))
        assert parents <= valid
        # A valid program never admitted to a cell is no MAP-Elites parent; a uniform draw takes it as any other.
        assert bool(parents - admitted) is expect_outsiders, (name, len(parents - admitted))
        store.close()
    config = Store.in_dir(run_dir, readonly=True).get_meta("config")
    assert config["ablation"] == "random-parent"


def test_an_ablation_is_fixed_for_the_run(tmp_path: Path) -> None:
    _run(tmp_path / "run", 2, ablation="random-parent")
    with pytest.raises(EvoError, match="resume cannot change ablation"):
        Engine.open(tmp_path / "run", {"ablation": "none"})
    with pytest.raises(EvoError, match="ablation"):
        RunConfig.from_dict({"ablation": "best-of-3"})
