"""Transfer between the tasks of a suite: elites of related tasks offered to an operator call.

Each task's engine gets a `TransferSource` as its `foreign` hook (evo/engine.py): called with the operator
about to run, it returns copies of elites of related tasks (evo/suite/tasks.py), each labelled with its
task in `meta["task"]`. The transplant operator always gets them (its donors); an LLM operator gets one or
two with probability `rate` (they join its prompt, labelled as another task's); the other operators get
none, since they would not use them. The operators that use a foreign elite name it in their children's
`meta["transfer"]`, which the store records as the child's cross-task source (evo/store/transfer.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from evo.program import Program
from evo.suite.tasks import Relation

if TYPE_CHECKING:
    from evo.engine import Engine

TRANSPLANT = "transplant"


class TransferSource:
    """The elites of `task`'s related tasks, drawn from their live engines (see the module's docstring)."""

    def __init__(self, task: str, related: Sequence[Relation], members: Mapping[str, Engine], rate: float = 0.5,
                 max_foreign: int = 3):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be a probability in [0, 1], got {rate}")
        self.task = task
        self.related = [r for r in related if r.task in members]
        self.members = members
        self.rate = rate
        self.max_foreign = max_foreign
        self.offered = 0  # foreign elites handed to operators (for the progress line)

    def __call__(self, operator: str, rng: np.random.Generator) -> list[Program]:
        """Foreign elites for one call of `operator` ([] for the operators that do not use them)."""
        if operator == TRANSPLANT:
            # Donors must declare this task's parameters: those of its category first, then the nearest.
            pool = [r for r in self.related if r.same_category] or self.related
            picked = pool[: self.max_foreign]
        elif operator.startswith("llm_") and self.related and rng.random() < self.rate:
            weights = np.array([2.0 if r.same_category else 1.0 for r in self.related]) * \
                np.array([max(r.similarity, 0.05) for r in self.related])
            n = min(len(self.related), 1 + int(rng.random() < 0.5))
            idx = rng.choice(len(self.related), size=n, replace=False, p=weights / weights.sum())
            picked = [self.related[int(i)] for i in idx]
        else:
            return []
        out = []
        for relation in picked:
            program = self._elite(relation.task, rng)
            if program is not None:
                out.append(program)
        self.offered += len(out)
        return out

    def _elite(self, task: str, rng: np.random.Generator) -> Program | None:
        """The best elite of `task` (or, one time in three, another of its elites), labelled with its task."""
        engine = self.members[task]
        best = engine.population.best()
        if best is None:
            return None
        pid = best[0]
        elites = engine.population.elite_ids()
        if len(elites) > 1 and rng.random() < 1 / 3:
            pid = elites[int(rng.integers(len(elites)))]
        program = engine.program(pid)
        return dataclasses.replace(program, meta={**program.meta, "task": task})
