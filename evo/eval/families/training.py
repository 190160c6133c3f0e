"""The `training` family: fixed-budget language-model training, scored by time-to-target.

A placeholder until its harness exists: it names its fidelities and, through the gate's registry, its
dynamic checks (`dynamic:causality`, `evo/audit/causality.py`), so that the auditor asks for them, at level
`publish` above all, of any task whose `task.toml` says `family = "training"`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evo.errors import EvoError
from evo.eval.backends.base import Evaluator
from evo.eval.families.base import Family, Fidelity
from evo.task import Task


class TrainingFamily(Family):
    name = "training"
    runs_on = "the training harness on a GPU (not built yet)"
    fidelities = (
        Fidelity("short", "a short run: a tenth of the training budget", {"budget_fraction": 0.1}),
        Fidelity("full", "the full training budget, then the time to the target loss", {"budget_fraction": 1.0}),
    )
    timed = True

    def backend(self, task: Task, workers: int, scratch: Path, **options: Any) -> Evaluator:
        raise EvoError(f"task {task.name}: the training family has no harness yet, so it has no default backend. "
                       f"Give the pipeline a backend of your own (Pipeline(task, backend)); its results must "
                       f"report the family's dynamic checks: {', '.join(self.dynamic_checks) or 'none'}")
