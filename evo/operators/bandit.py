"""Choosing the next operator: fixed weights, or a UCB1 bandit over observed success per cost.

The bandit's reward for one operator call is the number of its children admitted to the archive
(a new cell or a better elite); its cost is one call plus the tokens it spent (per 1,000), so an
LLM operator must earn its tokens. The configured weights act as a prior: each operator starts
with `prior_calls` virtual calls whose success rate is proportional to its weight.

An arm is an operator name. With several models behind `--llm`, the LLM operators are one per
(mode, model), named `llm_<mode>@<model>` (`evo.operators.llm.llm_operators`), so the same
bandit chooses the model with the operator, and a model whose children are never admitted
loses its share of the calls. Nothing of the bandit is stored apart: the store's events
(`operator_call`, `operator_failed` with their token counts, `admitted`) name the arm, and
`replay` rebuilds the state from their totals when a run resumes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


class OperatorBandit:
    """UCB1 over operator names; `choose` picks, `record_call` and `record_admission` teach it."""

    def __init__(self, names: Sequence[str], weights: Sequence[float], exploration: float = 0.5,
                 prior_calls: float = 5.0):
        if len(names) != len(weights) or not names:
            raise ValueError("OperatorBandit needs one weight per operator name, and at least one operator")
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        w = np.asarray(weights, dtype=float)
        w = w / w.sum()
        self.cost = np.full(len(names), prior_calls)
        self.reward = prior_calls * 0.1 * w / w.max()  # prior success rate <= 0.1 per call
        self.exploration = exploration

    def choose(self, rng: np.random.Generator, allowed: np.ndarray | None = None) -> int:
        """Index of the operator with the highest upper confidence bound (ties broken at random),
        among those `allowed` (a boolean mask with at least one True) when given."""
        total = self.cost.sum()
        ucb = self.reward / self.cost + self.exploration * np.sqrt(math.log(total) / self.cost)
        if allowed is not None:
            if not allowed.any():
                raise ValueError("OperatorBandit.choose needs at least one allowed operator")
            ucb = np.where(allowed, ucb, -np.inf)
        best = np.flatnonzero(ucb >= ucb.max() - 1e-12)
        return int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])

    def record_call(self, name: str, tokens: int = 0) -> None:
        i = self.index.get(name)
        if i is not None:
            self.cost[i] += 1.0 + tokens / 1000.0

    def record_admission(self, name: str) -> None:
        i = self.index.get(name)
        if i is not None:
            self.reward[i] += 1.0

    def shares(self, by: str = "arm") -> dict[str, float]:
        """Share of the cost spent so far (prior included) per arm, or per model with
        `by="model"` (the part of an arm name after '@'; "" for operators without a model)."""
        total = float(self.cost.sum())
        out: dict[str, float] = {}
        for name, i in self.index.items():
            key = name.partition("@")[2] if by == "model" else name
            out[key] = out.get(key, 0.0) + float(self.cost[i]) / total
        return out

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per operator: cost so far, admissions so far, estimated value (for displays and events)."""
        return {n: {"cost": round(float(self.cost[i]), 3), "admissions": round(float(self.reward[i]), 3),
                    "value": round(float(self.reward[i] / self.cost[i]), 5)} for n, i in self.index.items()}

    def replay(self, calls: Mapping[str, tuple[int, int]], admissions: Mapping[str, int]) -> None:
        """Restore from the store's totals: {operator: (calls, tokens)} and {operator: admissions}."""
        for name, (n_calls, tokens) in calls.items():
            i = self.index.get(name)
            if i is not None:
                self.cost[i] += n_calls + tokens / 1000.0
        for name, n in admissions.items():
            i = self.index.get(name)
            if i is not None:
                self.reward[i] += n
