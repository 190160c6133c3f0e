"""Replaying a run's store: the population and the novelty index are pure functions of it.

The engine rebuilds both this way when a run is reopened, and again after re-timing its elites;
`evo report` rebuilds the population of a finished run the same way, without starting an engine.
Replay admits evaluations in commit order, so the cells end exactly as the live engine left them.
"""

from __future__ import annotations

from evo.config import RunConfig
from evo.population import Cells, CVTCells, EmbeddingCellSpace, GridCells, Population, SamplingConfig
from evo.population.novelty import NoveltyArchive
from evo.program import Status
from evo.store import Store
from evo.task import Task


def new_population(task: Task, config: RunConfig, cell_space: EmbeddingCellSpace | None) -> Population:
    """An empty population with the run's cells: the task's descriptor grid, or frozen CVT cells."""
    margin = task.config.min_improvement
    # The config's qd_offset is in the task's own units (what a person knows a bound in); the cells
    # compare it with oriented scores. None: the worst score seen (see `Cells.qd_score`).
    offset = None if config.qd_offset is None else task.orient(config.qd_offset)
    if cell_space is not None:
        centroids = cell_space.centroids

        def make_cells() -> Cells:
            return CVTCells(centroids, qd_offset=offset, min_improvement=margin)
    else:
        specs = task.config.descriptors

        def make_cells() -> Cells:
            return GridCells(specs, qd_offset=offset, min_improvement=margin)

    sampling = SamplingConfig(exploit_ratio=config.exploit_ratio, explore_ratio=config.explore_ratio,
                              n_inspirations=config.n_inspirations)
    return Population(make_cells, n_islands=config.islands, migration_interval=config.migration_interval,
                      migrants=config.migrants, sampling=sampling)


def replay_evaluations(store: Store, population: Population) -> int:
    """Admit every valid evaluation of the store, in commit order; returns how many evaluations."""
    done = 0
    for rec in store.iter_evaluations():
        done += 1
        if rec.status == Status.EVALUATED and rec.score is not None:
            population.admit(rec.program_id, rec.island, rec.score, rec.descriptors)
    return done


def replay_embeddings(store: Store, novelty: NoveltyArchive, dim: int) -> None:
    """Add the embedding of every screened program of the store to the novelty index, in proposal order."""
    for ids, vectors in store.iter_embeddings(dim):
        novelty.add_batch(ids, vectors)


def rebuild_population(store: Store, task: Task, config: RunConfig) -> Population:
    """The population of a stored run, exactly as the live engine held it."""
    raw = store.get_meta("cell_space")
    space = EmbeddingCellSpace.from_dict(raw) if config.cells == "embedding" and raw else None
    population = new_population(task, config, space)
    replay_evaluations(store, population)
    return population
