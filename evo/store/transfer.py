"""The store's transfer records: which programs of a suite run were made from another task's elite.

In a suite run (evo/suite/) an operator may be shown, or build on, an elite of a related task: the LLM
operators show such elites in their prompt (role `inspiration`), the transplant operator writes one's
parameter settings into its parent (role `parent`). The operator says so in its child's
`meta["transfer"]`; the store writes one row per cross-task source here, in the same transaction as the
child itself (`Store.add_program`), so that a recorded child never lacks its credit.

`transfer_credit` answers how much of a run's progress came through transfer: of the children admitted to
the archive and of the rises of the run's best, how many (and how much) had a cross-task source.

The table is created on first write, so stores made before it existed read as having no transfers. Like
the rest of evo/store/, this module is the only place the table is spoken to in SQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evo.store.sqlite import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    program_id TEXT NOT NULL,
    from_task TEXT NOT NULL,
    from_program TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (program_id, from_program, role)
)
"""
ROLES = ("parent", "inspiration")


def _has_table(store: Store) -> bool:
    return store.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'transfers'").fetchone() \
        is not None


def add_transfers(store: Store, program_id: str, sources: Sequence[Mapping[str, object]]) -> None:
    """Record `program_id`'s cross-task sources ({task, program, role}) in the open transaction."""
    store.db.execute(_SCHEMA)
    store.db.executemany(
        "INSERT OR IGNORE INTO transfers(program_id, from_task, from_program, role) VALUES (?, ?, ?, ?)",
        [(program_id, str(s.get("task", "")), str(s.get("program", "")),
          str(s.get("role", "inspiration")) if s.get("role") in ROLES else "inspiration") for s in sources])


def transfers(store: Store) -> dict[str, list[tuple[str, str, str]]]:
    """{program id: [(from task, from program, role), ...]} of every program made with a cross-task source."""
    if not _has_table(store):
        return {}
    out: dict[str, list[tuple[str, str, str]]] = {}
    for pid, task, source, role in store.db.execute(
            "SELECT program_id, from_task, from_program, role FROM transfers ORDER BY rowid"):
        out.setdefault(pid, []).append((task, source, role))
    return out


@dataclass
class TransferCredit:
    """How much of a run's progress came through transfer. Scores are the engine's (higher is better).

    `admitted`: children (not seeds) admitted to the archive; `improvements`: children that raised the run's
    best, and `gain` the sum of those rises (from the best seed on); each `*_transfer` counts those of them
    that had a cross-task parent or inspiration. `by_task`: admitted transfer children by the task they drew
    on; `by_role`: by how (parent, inspiration). `proposed_transfer`: children made with a cross-task source,
    admitted or not.
    """

    admitted: int = 0
    admitted_transfer: int = 0
    improvements: int = 0
    improvements_transfer: int = 0
    gain: float = 0.0
    gain_transfer: float = 0.0
    proposed_transfer: int = 0
    by_task: Counter[str] = field(default_factory=Counter)
    by_role: Counter[str] = field(default_factory=Counter)

    @property
    def share(self) -> float:
        """The part of the best's rise that came from children with a cross-task source (0 without a rise)."""
        return self.gain_transfer / self.gain if self.gain > 0 else 0.0


def transfer_credit(store: Store) -> TransferCredit:
    """Walk the run's evaluations in commit order and credit admissions and rises of the best to transfer."""
    sources = transfers(store)
    credit = TransferCredit(proposed_transfer=len(sources))
    admitted = {pid for (pid,) in store.db.execute("SELECT DISTINCT program_id FROM events WHERE kind = 'admitted'")}
    best: float | None = None
    for pid, seed, score in evaluated_in_order(store):
        if score is None:
            continue
        child = not seed
        moved = child and pid in sources
        if child and pid in admitted:
            credit.admitted += 1
            if moved:
                credit.admitted_transfer += 1
                credit.by_task.update({task for task, _, _ in sources[pid]})
                credit.by_role.update({role for _, _, role in sources[pid]})
        if best is not None and score > best and child:
            credit.improvements += 1
            credit.gain += score - best
            if moved:
                credit.improvements_transfer += 1
                credit.gain_transfer += score - best
        best = score if best is None else max(best, score)
    return credit


def evaluated_in_order(store: Store) -> list[tuple[str, bool, float | None]]:
    """(program id, is a seed, score or None when it failed) of every finished evaluation, in commit order:
    what a suite's task bandit replays when the suite resumes (evo/suite/bandit.py)."""
    rows = store.db.execute(
        "SELECT p.id, p.operator, CASE WHEN p.status = 'evaluated' THEN p.score END"
        " FROM evaluations e JOIN programs p ON p.id = e.program_id ORDER BY e.n")
    return [(pid, operator == "seed", score) for pid, operator, score in rows]
