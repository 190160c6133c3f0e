"""The `kernels` family: Triton kernels scored against the speed of light (SOL score) on the GPU harness.

The harness (`evo/eval/backends/kernel.py`, `evo/eval/worker.py`, `evo/eval/judge.py`) runs each candidate
in a child that only makes the calls the judge asks for; the judge, a process that never imports a
candidate, compares the outputs and bounds the times; the engine side turns the times into the SOL score
(trusted arithmetic), so the answer arrives scored and the family has nothing to add to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evo.eval.backends.base import Evaluator
from evo.eval.families.base import Family, Fidelity
from evo.task import Task


class KernelsFamily(Family):
    name = "kernels"
    runs_on = "the GPU harness: one worker per GPU (Triton's interpreter on a machine without one)"
    fidelities = (
        Fidelity("correctness", "correctness and the dynamic checks on the small shapes, untimed",
                 {"shapes": "small", "timed": False}),
        Fidelity("timing", "every workload (hidden ones too) checked and timed against the speed of light",
                 {"shapes": "all", "timed": True}),
    )
    timed = True
    reference_names = {
        "SPEC": "the KernelSpec: workloads, tolerances, flops and bytes",
        "make_inputs": "make_inputs(params, seed, device) builds a workload's inputs",
        "run": "run(*inputs), the PyTorch reference the candidate must match",
    }

    def backend(self, task: Task, workers: int, scratch: Path, **options: Any) -> Evaluator:
        """A `KernelEvaluator`; `options`: devices, config, parallel_per_device, pool, ..."""
        from evo.eval.backends.kernel import KernelEvaluator  # imports torch: only where kernels run

        return KernelEvaluator(task, workers, scratch, **options)
