"""The evaluator protocol the engine awaits, whatever runs the candidates.

A backend only runs jobs: it hands back what the candidate produced (`outputs`, for the task family to
score) or what the harness scored on the trusted side, with the harness's dynamic `checks`. The verdict is
the pipeline's (`evo/eval/pipeline.py`), which wraps a backend in this same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from evo.program import Program

if TYPE_CHECKING:
    from evo.eval.families.base import Job


@dataclass
class EvalResult:
    """One finished evaluation. `failure` is a short kind ("timeout", "crashed", "invalid", "audit", ...).

    `checks` are the harness's dynamic checks, `(name, passed, reason)`, for the full audit. `outputs` are
    a candidate's raw outputs, read back on the trusted side and not yet scored (the family scores them,
    then drops them). `report` is the harness's scored report for people (per-workload rows of a kernel).
    `verdict` is the auditor's verdict (JSON), set by the pipeline on every result. `output` is a bounded tail
    of what the candidate printed (stdout and stderr), for people to read: shown, never believed. `review` is the
    model reviewer's (`Review.to_dict()`), set by the pipeline on a suspicious result it reviewed.
    """

    ok: bool
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    descriptors: tuple[float, ...] = ()
    failure: str | None = None
    error: str | None = None
    wall_s: float = 0.0
    verdict: str | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    outputs: dict[str, Any] | None = field(default=None, repr=False)
    report: dict[str, Any] | None = field(default=None, repr=False)
    output: str | None = field(default=None, repr=False)
    review: dict[str, Any] | None = None  # the model reviewer's review of a suspicious result (evo/audit/reviewer.py)


class Evaluator(Protocol):
    """Evaluates programs concurrently; at most `workers` at a time."""

    workers: int

    async def evaluate(self, program: Program) -> EvalResult: ...

    def close(self) -> None: ...


@runtime_checkable
class JobRunner(Protocol):
    """A backend that takes the job itself (its rung and the task's hash), not only the program: the pipeline
    hands such a backend every job; one without `run` gets `job.program` and can run only the last rung."""

    async def run(self, job: Job) -> EvalResult: ...


@runtime_checkable
class FreshInputs(Protocol):
    """A backend that can run a candidate again on inputs it has not seen: a new session of the task's inputs
    (new correctness and timing sets, new expected outputs), for the re-run of a candidate the model reviewer held."""

    async def evaluate_on_fresh_inputs(self, program: Program) -> EvalResult: ...
