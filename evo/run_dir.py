"""A run directory: creating a new run in one, and opening an existing one to continue it.

A run directory holds the store (`evo.db`): its meta rows are the run's identity (task, config, and for
embedding cells the frozen cell space) and its program rows start with the task's seeds. Both functions
return what an `Engine` is built from: the store, the task and the run's config.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np

from evo.config import RunConfig
from evo.embed import make_embedder
from evo.errors import EvoError, OperatorError
from evo.operators import ProposalRequest, build_operators
from evo.population import EmbeddingCellSpace
from evo.program import Program
from evo.store import DB_NAME, Store
from evo.task import Task, load_task

# What `evo resume` may change; everything else would make the resumed run a different run.
RESUME_OVERRIDES = frozenset({"budget", "workers", "time_limit_s"})


def create_run(run_dir: Path, config: RunConfig) -> tuple[Store, Task, RunConfig]:
    """Start a new run in `run_dir`: store the config and the task's seeds."""
    run_dir = Path(run_dir)
    task = load_task(config.task)
    if (run_dir / DB_NAME).exists():
        other = Store.in_dir(run_dir, readonly=True).get_meta("task")
        if other != task.name:
            raise EvoError(f"{run_dir} holds a run of task {other!r}, not {task.name!r}: choose another --run-dir")
        raise EvoError(f"{run_dir} already holds a run of {task.name}: continue it with `evo resume {run_dir}`"
                       " or choose another --run-dir")
    seeds = task.seeds()
    store = Store.in_dir(run_dir)
    # A task given by folder path stays a path (resolved), so that resume finds it again.
    task_ref = str(task.root) if (Path(config.task) / "task.toml").is_file() else task.name
    # A task without descriptors (the kernel tasks) gets cells over code embeddings.
    cells = "embedding" if config.cells == "grid" and not task.config.descriptors else config.cells
    config = RunConfig.from_dict({**config.to_dict(), "task": task_ref, "cells": cells})
    store.set_meta("task", task.name)
    store.set_meta("config", config.to_dict())
    store.set_meta("created", time.time())
    if config.cells == "embedding":
        store.set_meta("cell_space", _fit_cell_space(seeds, config).to_dict())
    embedder = make_embedder(config.embedder)
    for i, seed in enumerate(seeds):
        seed.island = i % config.islands
        store.add_program(seed, embedder.embed([seed.text])[0],
                          events=[("proposed", {"operator": "seed", "island": seed.island})])
    store.log("run_created", {"config": config.to_dict()})
    return store, task, config


def open_run(run_dir: Path, overrides: dict[str, Any] | None = None) -> tuple[Store, Task, RunConfig]:
    """Reopen a run to continue it; `overrides` may change budget, workers, time limit."""
    run_dir = Path(run_dir)
    if not (run_dir / DB_NAME).is_file():
        raise EvoError(f"{run_dir} is not an evo run directory (no {DB_NAME}); start one with `evo run`")
    store = Store.in_dir(run_dir)
    raw = store.get_meta("config")
    if raw is None:
        raise EvoError(f"{run_dir / DB_NAME} has no run config: was the run created by `evo run`?")
    bad = set(overrides or {}) - RESUME_OVERRIDES
    if bad:
        raise EvoError(f"resume can change only {', '.join(sorted(RESUME_OVERRIDES))}, not {', '.join(sorted(bad))}")
    config = RunConfig.from_dict({**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}})
    store.set_meta("config", config.to_dict())
    return store, load_task(config.task), config


def _fit_cell_space(seeds: list[Program], config: RunConfig) -> EmbeddingCellSpace:
    """Embedding-defined cells: PCA fitted on the seeds and a few of their mutants, frozen for the run."""
    embedder = make_embedder(config.embedder)
    rng = np.random.default_rng(config.seed)
    texts = [s.text for s in seeds]
    plain = {k: w for k, w in config.operators.items() if not k.startswith("llm_") and w > 0}
    ops = [op for op, _ in build_operators(plain) if op.arity == 1] if plain else []
    for _ in range(64):
        if not ops:
            break
        op = ops[int(rng.integers(len(ops)))]
        parent = seeds[int(rng.integers(len(seeds)))]
        try:
            proposals = asyncio.run(op.propose(ProposalRequest(parents=[parent], rng=rng)))
        except OperatorError:
            continue
        texts.extend(p.source if isinstance(p.source, str) else "" for p in proposals)
    vectors = embedder.embed(texts)
    return EmbeddingCellSpace.fit(vectors, n_dims=config.embedding_dims, n_cells=config.embedding_cells,
                                  seed=config.seed)
