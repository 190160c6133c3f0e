"""The `math` family: CPU problems (circle packing, point sets). Each candidate runs once in a sandboxed
process; its raw outputs come back and the task's trusted `evaluate` (its `reference.py`) scores them here
(`Family.score`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evo.eval.backends.base import Evaluator
from evo.eval.families.base import Family, Fidelity
from evo.task import Task


class MathFamily(Family):
    name = "math"
    runs_on = "a fresh sandboxed CPU process per candidate (evo/eval/sandbox.py)"
    fidelities = (Fidelity("full", "the candidate runs once; the task's evaluate scores its outputs"),)
    reference_names = {
        "run_candidate": "run_candidate(module) runs in the sandbox beside the candidate and returns its outputs",
        "evaluate": "evaluate(outputs) scores those outputs on the trusted side",
    }

    def backend(self, task: Task, workers: int, scratch: Path, **options: Any) -> Evaluator:
        from evo.eval.backends.local import LocalEvaluator

        return LocalEvaluator(task, workers, scratch, score=False, **options)
