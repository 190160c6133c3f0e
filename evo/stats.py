"""`RunStats`: the live figures of a run, for the progress display and the final summary.

What went wrong is counted in three kinds that mean different things to a user: failed
evaluations (the candidate ran and failed: a timeout, an error, the audit), rejected children
(turned away unevaluated: they do not parse, they are near-duplicates, no operator applied to
the parents) and operator errors (an operator call that made no child, by operator). Calls that
found the model server away are counted apart again: they fail nothing, the run waits for it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from evo.store import Store

# Reason kinds the engine stores for children turned away before evaluation (`rejected` events).
REJECTIONS = frozenset({"parse_error", "near_duplicate"})


@dataclass
class RunStats:
    """Live figures of a run, for the progress display and the final summary."""

    budget: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    done_at_start: int = 0
    proposals: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # failed evaluations by reason (timeout, audit, ...)
    rejections: Counter[str] = field(default_factory=Counter)  # children turned away unevaluated, by reason
    operator_errors: Counter[str] = field(default_factory=Counter)  # calls that made no child, by operator
    llm_unavailable: int = 0  # calls that found the model server away: no child, and no failure
    seed_score: float | None = None
    best_score: float | None = None
    best_id: str | None = None
    coverage: float = 0.0
    qd_score: float = 0.0

    @property
    def evals_per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return 60.0 * (self.done - self.done_at_start) / elapsed if elapsed > 0 else 0.0

    def count_stored(self, store: Store) -> None:
        """Add what the store's events record of earlier sessions (a resumed run goes on counting)."""
        for kind, n in store.failure_counts().items():
            if kind != "operator_error":  # counted by operator below
                (self.rejections if kind in REJECTIONS else self.failures)[kind] += n
        self.operator_errors.update(str(data.get("operator")) for *_, data in store.events("operator_failed") if data)
        self.llm_unavailable += store.event_counts().get("llm_unavailable", 0)
