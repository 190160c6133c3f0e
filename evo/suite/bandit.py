"""Which task of a suite gets the next proposal: a bandit over tasks, with a floor so that none starves.

Protocol: build with the task names, `observe` every finished evaluation of a task in that task's order
(a resumed run replays its stores the same way, so the bandit is a pure function of them), `choose` a task
for each proposal among those that can take one, and `grant` it (the floor counts grants).

The value of a task is its recent improvement per evaluation: the rises of its best score over its last
`window` evaluations, each relative to the best before it (scores of different tasks are on different
scales), divided by the evaluations in the window. A task with fewer than `warmup` evaluations of children
is valued at the best value of any task, so that each gets a look before the evidence speaks.

The floor: each of the K tasks that can take a proposal gets at least `floor / K` of the proposals granted
(counted since the run began): a task below its share is chosen before any other. The rest go by value,
drawn in proportion to it (a small `epsilon` keeps a task whose progress stalled from being shut out by
chance, while the floor keeps it from being shut out for good).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Arm:
    best: float | None = None
    gains: deque[float] = field(default_factory=deque)
    children: int = 0  # evaluations of children (not seeds) observed
    granted: int = 0


class TaskBandit:
    """Allocation of proposals over the tasks of a suite (see the module's docstring)."""

    def __init__(self, tasks: Sequence[str], floor: float = 0.25, window: int = 16, warmup: int = 3,
                 epsilon: float = 1e-3):
        if not tasks:
            raise ValueError("TaskBandit needs at least one task")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be a fraction in [0, 1], got {floor}: e.g. 0.25 gives every one of K "
                             "tasks at least a quarter of its even share, 0.25 / K of the proposals")
        if window < 1 or warmup < 0:
            raise ValueError(f"window must be at least 1 and warmup at least 0, got {window} and {warmup}")
        self.tasks = list(tasks)
        self.floor = floor
        self.window = window
        self.warmup = warmup
        self.epsilon = epsilon
        self._arms = {t: _Arm(gains=deque(maxlen=window)) for t in self.tasks}

    def observe(self, task: str, score: float | None, seed: bool = False) -> None:
        """One finished evaluation of `task`: its score (None when it failed); seeds set the starting best."""
        arm = self._arms[task]
        gain = 0.0
        if score is not None:
            if arm.best is not None and score > arm.best:
                gain = (score - arm.best) / max(abs(arm.best), 1e-9)
            arm.best = score if arm.best is None else max(arm.best, score)
        if not seed:
            arm.children += 1
            arm.gains.append(gain)

    def grant(self, task: str, n: int = 1) -> None:
        """Count `n` proposals given to `task` (the floor's measure)."""
        self._arms[task].granted += n

    def granted(self) -> dict[str, int]:
        """Proposals granted per task so far."""
        return {t: a.granted for t, a in self._arms.items()}

    def value(self, task: str) -> float:
        """Recent relative improvement per evaluation of `task` (optimistic while it has too few)."""
        arm = self._arms[task]
        if arm.children < self.warmup:
            measured = [self._rate(a) for a in self._arms.values() if a.children >= self.warmup]
            return max(measured, default=1.0) or 1.0
        return self._rate(arm)

    @staticmethod
    def _rate(arm: _Arm) -> float:
        return sum(arm.gains) / len(arm.gains) if arm.gains else 0.0

    def choose(self, rng: np.random.Generator, eligible: Sequence[str] | None = None) -> str:
        """The task for the next proposal, among `eligible` (default: all): a task under its floor first."""
        names = list(self.tasks if eligible is None else eligible)
        if not names:
            raise ValueError("no task can take a proposal: choose needs at least one eligible task")
        total = sum(self._arms[t].granted for t in names)
        share = self.floor / len(names)
        starved = [t for t in names if self._arms[t].granted < share * (total + 1)]
        if starved:
            return min(starved, key=lambda t: (self._arms[t].granted, names.index(t)))
        values = np.array([self.value(t) for t in names])
        weights = values + self.epsilon * max(float(values.max()), 1e-12)
        return names[int(rng.choice(len(names), p=weights / weights.sum()))]

    def state(self) -> dict[str, dict[str, float | int | None]]:
        """Per task: proposals granted, children observed, best score, current value (for progress and events)."""
        return {t: {"granted": a.granted, "children": a.children, "best": a.best, "value": self.value(t)}
                for t, a in self._arms.items()}

    def restore_grants(self, granted: Mapping[str, int]) -> None:
        """Set the grants of earlier sessions (a resumed suite: the proposal calls its task stores record)."""
        for t, n in granted.items():
            if t in self._arms:
                self._arms[t].granted = int(n)
