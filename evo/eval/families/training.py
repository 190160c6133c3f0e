"""The `training` family: language-model training recipes, scored on validation bits per byte.

A candidate is one `train.py` (the program's main file) that defines `build_model(info)` and
`train(data, budget)`; the harness (`evo/eval/training/`) trains it in a sandboxed process against a clock of
its own, takes the weights as data, and a trusted scorer computes validation bpb from the logits of a
sandboxed forward process (see `docs/training.md`). The answer arrives scored, with the family's dynamic
checks (registered in the gate, `evo/audit/gate.py`): causality, data_split, budget, no_carried_state,
harness_loss, model_unchanged.

The settings (budget, data folder, device, the CPU smoke configuration) are resolved on the machine that
runs the job, from the task's `[training]` table and the environment (`evo/eval/training/spec.py`): the
job carries contents, never a path of the engine's machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evo.eval.backends.base import Evaluator
from evo.eval.families.base import Family, Fidelity
from evo.task import Task


class TrainingFamily(Family):
    name = "training"
    runs_on = "the training harness: a sandboxed training process, then a trusted scorer (one GPU, or the CPU)"
    fidelities = (
        Fidelity("short", "a short run: a tenth of the training budget", {"budget_fraction": 0.1}),
        Fidelity("full", "the full training budget, then validation bpb", {"budget_fraction": 1.0}),
    )
    timed = True

    def backend(self, task: Task, workers: int, scratch: Path, **options: Any) -> Evaluator:
        """A `TrainingEvaluator`, or for `kind = "time_to_target"` a `TimeToTargetEvaluator` (evo/eval/training/
        target.py); `options` override the task's `[training]` settings (budget_s, data, device, target_bpb, ...)."""
        from evo.eval.training.harness import TrainingEvaluator  # imports torch: only where training runs
        from evo.eval.training.spec import resolve_spec
        from evo.eval.training.target import KIND, TimeToTargetEvaluator, resolve_rule, task_kind

        spec = resolve_spec(task.root, **options)
        descriptors = tuple(d.name for d in task.config.descriptors)
        if task_kind(task.root) == KIND:  # `kind = "time_to_target"` in [training]: seeds, a t-test, timed
            rule = resolve_rule(task.root, spec.device, **{k: v for k, v in options.items()
                                                           if k in ("target_bpb", "seeds", "alpha")})
            return TimeToTargetEvaluator(spec, rule, workers, scratch, descriptors)
        return TrainingEvaluator(spec, workers, scratch, descriptors)
