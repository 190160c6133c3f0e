"""Choosing the operator of the next call: by weight or by the bandit, among those that can run.

Two things narrow the choice before the weights (or the bandit) speak:

- Applicability. An operator that can tell from the parents that it has nothing to work on
  (no parameters declared, no literal, a crossover of a parent with itself: `applies`) is passed
  over for them, and the choice is made again among the operators that apply.
- Model slots. Calls of operators that wait on a model (`calls_model`: the LLM operators) may
  hold at most `model_slots` of the engine's proposal streams at once. The engine runs one
  stream more than that when the run has other operators, so a model server that is slow,
  still loading or away holds up only its own operators: the others keep the workers busy,
  and the model's operators are chosen again as soon as a slot is free.

Protocol, per call: `first(rng)` picks an operator (its arity says how many parents to
sample); `settle(index, parents, rng)` keeps it, or chooses again among the operators that
apply to those parents (None when none does); `with calling(index)` holds a model slot
while the call, and any pause after it, lasts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from evo.operators.bandit import OperatorBandit
from evo.operators.base import Operator, applies, calls_model
from evo.program import Program


class OperatorChoice:
    """The weighted (or bandit-chosen) operators of a run, and their model calls in flight."""

    def __init__(self, operators: Sequence[tuple[Operator, float]], bandit: OperatorBandit | None = None,
                 model_slots: int | None = None):
        if not operators:
            raise ValueError("OperatorChoice needs at least one operator")
        if model_slots is not None and model_slots < 1:
            raise ValueError(f"model_slots must be None (no limit) or at least 1, got {model_slots}")
        self.operators = [op for op, _ in operators]
        weights = np.array([w for _, w in operators], dtype=float)
        self._probs = weights / weights.sum()
        self._cdf = _cdf(self._probs)
        self.bandit = bandit
        self.model = np.array([calls_model(op) for op in self.operators])
        self.model_slots = model_slots
        self.model_calls = 0  # calls of model operators in flight (held slots)

    @property
    def others(self) -> bool:
        """Whether the run has an operator that needs no model."""
        return not self.model.all()

    def free(self) -> np.ndarray:
        """Mask of the operators that may be called now: the model's only while a slot is free."""
        if self.model_slots is not None and self.model_calls >= self.model_slots:
            return ~self.model
        return np.ones(len(self.operators), dtype=bool)

    def _pick(self, rng: np.random.Generator, allowed: np.ndarray) -> int:
        if self.bandit is not None:
            return self.bandit.choose(rng, None if allowed.all() else allowed)
        if allowed.all():
            return draw(rng, self._cdf)
        return draw(rng, _cdf(self._probs * allowed / (self._probs * allowed).sum()))

    def first(self, rng: np.random.Generator) -> int:
        """An operator that may be called now, before the parents are sampled."""
        if self.model_slots is None or self.model_calls < self.model_slots:  # all free: no mask to build
            return self.bandit.choose(rng, None) if self.bandit is not None else draw(rng, self._cdf)
        allowed = self.free()
        if not allowed.any():
            # Every stream beyond the slots makes non-model children, so this means a stream too many.
            raise RuntimeError(f"no operator is free: {self.model_calls} model calls hold all "
                               f"{self.model_slots} slots and the run has no other operator; "
                               "run at most `model_slots` proposal streams")
        return self._pick(rng, allowed)

    def settle(self, index: int, parents: Sequence[Program], rng: np.random.Generator) -> int | None:
        """`index` if its operator applies to `parents`; else one chosen among those free operators
        that apply to the first `arity` of them (None when none does)."""
        if applies(self.operators[index], parents):
            return index
        allowed = self.free() & np.array([applies(op, parents) for op in self.operators])
        return self._pick(rng, allowed) if allowed.any() else None

    @contextmanager
    def calling(self, index: int) -> Iterator[None]:
        """Hold a model slot, for a model operator, while the block runs."""
        holds = bool(self.model[index])
        self.model_calls += holds
        try:
            yield
        finally:
            self.model_calls -= holds


def _cdf(probs: np.ndarray) -> list[float]:
    """The cumulative sums that numpy's `Generator.choice(n, p=probs)` searches, as it makes them."""
    cdf = probs.cumsum()
    cdf /= cdf[-1]
    return cdf.tolist()


def draw(rng: np.random.Generator, cdf: list[float]) -> int:
    """`rng.choice(n, p=probs)` for the `probs` whose `_cdf` is `cdf`: the same single uniform draw and
    the same index (numpy searches `cdf` for it from the right), without numpy's checks of `probs`
    on every call (~60 us of the engine's ~1.5 ms a candidate)."""
    return bisect_right(cdf, rng.random())
