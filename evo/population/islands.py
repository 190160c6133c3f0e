"""The population the engine talks to: islands of MAP-Elites cells with ring migration.

Protocol: build a `Population` with a factory of empty cells; for every evaluated program call
`admit` (or `decide` first, which changes nothing); ask `sample` for parents and inspirations.

Every `migration_interval`-th `admit` call (counting all calls, rejected ones too), each
island's top `migrants` elites are offered to the next island in the ring, with their own
scores and descriptors. The migrants are chosen for all islands before any is added, so a
program moves one step per round. The population is therefore a pure function of the sequence
of `admit` calls: the engine rebuilds it on resume by replaying them in store order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evo.population.grid import Admission, Cells
from evo.population.sampling import SamplingConfig, sample_inspirations, sample_parents


class Population:
    """Islands of `Cells`, migration between them, and parent sampling."""

    def __init__(
        self,
        make_cells: Callable[[], Cells],
        n_islands: int = 1,
        migration_interval: int = 50,
        migrants: int = 2,
        sampling: SamplingConfig = SamplingConfig(),
    ):
        if n_islands < 1:
            raise ValueError(f"Population: n_islands must be >= 1, got {n_islands}")
        if migration_interval < 1:
            raise ValueError(
                f"Population: migration_interval must be >= 1 (admit calls), got {migration_interval}"
            )
        if migrants < 0:
            raise ValueError(f"Population: migrants must be >= 0, got {migrants}")
        self.islands: list[Cells] = [make_cells() for _ in range(n_islands)]
        if len({id(c) for c in self.islands}) != n_islands:
            raise ValueError(
                "Population: make_cells returned the same Cells object twice; it must build a new one "
                "per call. If you wrote `lambda: cells`, write `lambda: GridCells(specs)` instead."
            )
        self.migration_interval = migration_interval
        self.migrants = migrants
        self.sampling = sampling
        self.admissions = 0  # admit() calls so far
        self.last_migrations: list[tuple[str, int, int]] = []  # (id, from, to) of the last admit
        # For every program that is an elite somewhere: its score and descriptors (migration
        # re-adds them) and on how many islands it is an elite (to forget it when it is on none).
        self._elite_info: dict[str, tuple[float, tuple[float, ...]]] = {}
        self._elite_count: dict[str, int] = {}

    def _cells(self, island: int) -> Cells:
        if not 0 <= island < len(self.islands):
            raise ValueError(
                f"island {island} does not exist; this population has islands 0..{len(self.islands) - 1}"
            )
        return self.islands[island]

    def decide(self, program_id: str, island: int, score: float, descriptors: Sequence[float]) -> Admission:
        """What `admit` would do on that island (before any migration); changes nothing."""
        return self._cells(island).decide(program_id, score, descriptors)

    def admit(self, program_id: str, island: int, score: float, descriptors: Sequence[float]) -> Admission:
        """Offer an evaluated program to its island's cells; migrate when the count comes round."""
        self.last_migrations = []
        verdict = self._add(self._cells(island), program_id, score, descriptors)
        self.admissions += 1
        if len(self.islands) > 1 and self.migrants > 0 and self.admissions % self.migration_interval == 0:
            self._migrate()
        return verdict

    def _add(self, cells: Cells, program_id: str, score: float, descriptors: Sequence[float]) -> Admission:
        verdict = cells.add(program_id, score, descriptors)
        if verdict.admitted:
            self._elite_info[program_id] = (float(score), tuple(map(float, descriptors)))
            self._elite_count[program_id] = self._elite_count.get(program_id, 0) + 1
            if verdict.previous is not None:
                self._release(verdict.previous)
        return verdict

    def _release(self, program_id: str) -> None:
        left = self._elite_count[program_id] - 1
        if left:
            self._elite_count[program_id] = left
        else:
            del self._elite_count[program_id]
            del self._elite_info[program_id]

    def _migrate(self) -> None:
        """Ring migration: O(migrants * islands), never a scan of the population."""
        n = len(self.islands)
        # Snapshot score and descriptors first: an earlier move of this round may displace a
        # later migrant from its last cell, which forgets its info.
        moves = [
            (pid, src, (src + 1) % n, self._elite_info[pid])
            for src, cells in enumerate(self.islands)
            for pid, _ in cells.top(self.migrants)
        ]
        for pid, src, dst, (score, descriptors) in moves:
            if self._add(self.islands[dst], pid, score, descriptors).admitted:
                self.last_migrations.append((pid, src, dst))

    def sample(
        self, island: int, rng: np.random.Generator, n_parents: int = 1
    ) -> tuple[list[str], list[str]]:
        """(parent ids, inspiration ids) from one island; inspirations never include a parent.

        An empty island (early in a run, before its first admission) borrows from the next
        non-empty island in ring order. ([], []) only when every island is empty.
        """
        self._cells(island)  # validates the index
        n = len(self.islands)
        for step in range(n):
            cells = self.islands[(island + step) % n]
            if cells.num_elites:
                break
        else:
            return [], []
        parents = sample_parents(cells, n_parents, rng, self.sampling)
        return parents, sample_inspirations(cells, set(parents), rng, self.sampling)

    def best(self) -> tuple[str, float] | None:
        """(id, score) of the best elite over all islands (the lowest island wins a tie)."""
        found = [b for b in (c.best() for c in self.islands) if b is not None]
        return max(found, key=lambda b: b[1]) if found else None

    def elite_info(self, program_id: str) -> tuple[float, tuple[float, ...]] | None:
        """(score, descriptors) of a program that is an elite on some island, else None."""
        return self._elite_info.get(program_id)

    @property
    def coverage(self) -> float:
        """Mean coverage over islands."""
        return sum(c.coverage for c in self.islands) / len(self.islands)

    @property
    def qd_offset(self) -> float:
        """The QD-score's offset, one for all islands: the cells' declared `qd_offset`, or (None) the
        worst score offered to any island so far (see `Cells.qd_score`)."""
        declared = self.islands[0].qd_offset
        if declared is not None:
            return declared
        worst = min(c.worst for c in self.islands)
        return worst if math.isfinite(worst) else 0.0

    @property
    def qd_score(self) -> float:
        """Sum of the islands' QD scores at `qd_offset` (a migrated elite counts on every island that
        holds it)."""
        offset = self.qd_offset
        return sum(c.qd_score_at(offset) for c in self.islands)

    def elite_ids(self) -> list[str]:
        """Every program that is an elite on some island, in the order it became one."""
        return list(self._elite_info)

    @property
    def num_elites(self) -> int:
        """Distinct programs that are an elite on at least one island."""
        return len(self._elite_count)

    def tables(self) -> list[list[dict[str, Any]]]:
        """`Cells.table()` of every island: the full state, to show or compare."""
        return [c.table() for c in self.islands]
