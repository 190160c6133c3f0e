"""Parent and inspiration selection over a `Cells`.

A parent is drawn in one of three ways, by the ratios of `SamplingConfig`:

- exploit (`exploit_ratio`): a tournament of `tournament_size` elites drawn uniformly over
  filled cells; the best score wins. Pressure toward the top, without sorting the archive.
- explore (`explore_ratio`): one elite uniformly over filled cells (classic MAP-Elites).
- frontier (the rest): one of the most recently admitted elites (`Cells.recent`, the last
  `frontier_size` admissions still in place). New cells and fresh improvements are where the
  search is moving; this keeps following them without a novelty score in the population.

Inspirations (shown to the LLM next to the parent) are half tournament winners (strong elites)
and half uniform draws (diverse elites from other cells), never a program in `exclude` and
never the same twice. Every draw costs O(tournament_size): no call scans all elites.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from evo.population.grid import Cells


@dataclass(frozen=True)
class SamplingConfig:
    exploit_ratio: float = 0.7  # parent = winner of a tournament among sampled elites
    explore_ratio: float = 0.2  # parent = uniform over filled cells; the rest: frontier
    tournament_size: int = 4
    n_inspirations: int = 3
    frontier_size: int = 16  # frontier parents come from this many most recent admissions

    def __post_init__(self) -> None:
        for name in ("exploit_ratio", "explore_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SamplingConfig: {name} must be in [0, 1], got {value}")
        total = self.exploit_ratio + self.explore_ratio
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"SamplingConfig: exploit_ratio + explore_ratio = {total:g} exceeds 1; lower one of them "
                "(the remainder, 1 - exploit - explore, goes to frontier parents)"
            )
        if self.tournament_size < 1:
            raise ValueError(f"SamplingConfig: tournament_size must be >= 1, got {self.tournament_size}")
        if self.n_inspirations < 0:
            raise ValueError(f"SamplingConfig: n_inspirations must be >= 0, got {self.n_inspirations}")
        if self.frontier_size < 1:
            raise ValueError(f"SamplingConfig: frontier_size must be >= 1, got {self.frontier_size}")

    @property
    def frontier_ratio(self) -> float:
        return max(0.0, 1.0 - self.exploit_ratio - self.explore_ratio)


def tournament(cells: Cells, size: int, rng: np.random.Generator) -> str | None:
    """The best of `size` elites drawn uniformly (with replacement); None if the cells are empty."""
    best_id, best_score = None, -np.inf
    for pid in cells.sample_elite_ids(size, rng):
        score = cells.elite_score(pid)
        if score is not None and (best_id is None or score > best_score):
            best_id, best_score = pid, score
    return best_id


def sample_parents(cells: Cells, n: int, rng: np.random.Generator, config: SamplingConfig) -> list[str]:
    """`n` parent ids (repeats allowed), or [] if the cells are empty."""
    if cells.num_elites == 0 or n <= 0:
        return []
    parents: list[str] = []
    for u in rng.random(n):
        if u < config.exploit_ratio:
            pid = tournament(cells, config.tournament_size, rng)
        elif u < config.exploit_ratio + config.explore_ratio:
            pid = cells.sample_elite_ids(1, rng)[0]
        else:
            frontier = cells.recent(config.frontier_size)
            pid = frontier[int(rng.random() * len(frontier))] if frontier else None
        parents.append(pid if pid is not None else cells.sample_elite_ids(1, rng)[0])
    return parents


def sample_inspirations(
    cells: Cells, exclude: Collection[str], rng: np.random.Generator, config: SamplingConfig
) -> list[str]:
    """Up to `n_inspirations` distinct elite ids not in `exclude`: strong ones first, then diverse.

    Small cells are handled exactly; in large ones the draws are bounded (8 per wanted id), so
    fewer come back only when almost every draw hits `exclude` or an id already chosen.
    """
    want = config.n_inspirations
    if want <= 0 or cells.num_elites == 0:
        return []
    n_strong = (want + 1) // 2
    if cells.num_elites <= 4 * want + len(exclude):
        # Few elites: take them all into account (cheap at this size), so none is missed.
        others = [pid for pid, _ in cells.top(cells.num_elites) if pid not in exclude]
        rest = others[n_strong:]
        rng.shuffle(rest)
        return others[:n_strong] + rest[: want - min(n_strong, len(others))]
    chosen: list[str] = []
    for attempt in range(8 * want):  # bounded: with few elites, duplicates and exclusions repeat
        if len(chosen) == want:
            break
        strong = len(chosen) < n_strong and attempt < 4 * want
        if strong:
            pid = tournament(cells, config.tournament_size, rng)
        else:
            pid = cells.sample_elite_ids(1, rng)[0]
        if pid is not None and pid not in exclude and pid not in chosen:
            chosen.append(pid)
    return chosen


class UniformPool:
    """Program ids drawn uniformly at random: the parents of the ablation baselines, with no MAP-Elites
    selection (`random-parent`: every valid program; `best-of-n`: the valid seeds only). O(1) a draw."""

    def __init__(self, ids: Collection[str] = ()):
        self.ids: list[str] = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, program_id: str) -> None:
        """One more program to draw from."""
        self.ids.append(program_id)

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        """`n` ids, uniformly with replacement; [] when the pool is empty."""
        if not self.ids or n <= 0:
            return []
        return [self.ids[int(i)] for i in rng.integers(len(self.ids), size=n)]

    def sample_distinct(self, n: int, exclude: Collection[str], rng: np.random.Generator) -> list[str]:
        """Up to `n` distinct ids not in `exclude`, uniformly (bounded draws, as `sample_inspirations`)."""
        chosen: list[str] = []
        for _ in range(8 * n):
            if len(chosen) == n or not self.ids:
                break
            pid = self.ids[int(rng.integers(len(self.ids)))]
            if pid not in exclude and pid not in chosen:
                chosen.append(pid)
        return chosen
