"""The evaluator protocol the engine awaits, whatever runs the candidates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from evo.program import Program


@dataclass
class EvalResult:
    """One finished evaluation. `failure` is a short kind ("timeout", "crashed", "invalid", ...)."""

    ok: bool
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    descriptors: tuple[float, ...] = ()
    failure: str | None = None
    error: str | None = None
    wall_s: float = 0.0
    verdict: str | None = None  # the auditor's verdict (JSON) where the backend audits


class Evaluator(Protocol):
    """Evaluates programs concurrently; at most `workers` at a time."""

    workers: int

    async def evaluate(self, program: Program) -> EvalResult: ...

    def close(self) -> None: ...
