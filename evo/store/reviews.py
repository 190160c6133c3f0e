"""The store's reviews: what the model reviewer said about suspicious candidates, and what became of them.

One row per review (`evo/audit/reviewer.py`), written by the engine when it records the evaluation: the
triggers that asked for it, the model's verdict (`clean`, `flagged`, `malformed`, `unavailable`) and
reasons, the answer it was parsed from, and the outcome (`admitted`: clean; `cleared`: held, the
publish-level re-run passed; `rejected`: held, the re-run failed). `caught` turns the rejected ones into
lines of the hack catalogue, so that the next reviews of a resumed run know what this one caught.

The table is created on first write, so stores made before it existed read as having no reviews. Like the
rest of evo/store/, this module is the only place the table is spoken to in SQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evo.store.sqlite import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    seq INTEGER PRIMARY KEY,
    program_id TEXT NOT NULL,
    task TEXT NOT NULL,
    verdict TEXT NOT NULL,
    outcome TEXT NOT NULL,
    triggers TEXT NOT NULL,
    reasons TEXT NOT NULL,
    model TEXT,
    reply TEXT,
    data TEXT,
    created REAL NOT NULL
)
"""

_MAIN = ("verdict", "outcome", "triggers", "reasons", "model", "reply")


@dataclass
class ReviewRecord:
    """One stored review. `data`: the rest of the review (scores of both runs, the re-run's error, the
    model call's token usage)."""

    program_id: str
    task: str
    verdict: str
    outcome: str
    triggers: list[str]
    reasons: list[str]
    model: str = ""
    reply: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0


def _has_table(store: Store) -> bool:
    return store.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reviews'").fetchone() \
        is not None


def add_review(store: Store, program_id: str, task: str, review: Mapping[str, Any]) -> None:
    """Store one review (`Review.to_dict()`), joining any transaction the engine left open."""
    with store.db:
        store._begin()
        store.db.execute(_SCHEMA)
        store.db.execute(
            "INSERT INTO reviews(program_id, task, verdict, outcome, triggers, reasons, model, reply, data, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (program_id, task, str(review.get("verdict", "")), str(review.get("outcome", "")),
             json.dumps(list(review.get("triggers", []))), json.dumps(list(review.get("reasons", []))),
             str(review.get("model", "")), str(review.get("reply", "")),
             json.dumps({k: v for k, v in review.items() if k not in _MAIN}, default=str), time.time()),
        )


def reviews(store: Store, *, outcome: str | None = None) -> list[ReviewRecord]:
    """Every review (with `outcome`, if given), oldest first."""
    if not _has_table(store):
        return []
    query = ("SELECT program_id, task, verdict, outcome, triggers, reasons, model, reply, data, created"
             " FROM reviews")
    params: tuple[str, ...] = ()
    if outcome is not None:
        query += " WHERE outcome = ?"
        params = (outcome,)
    rows = store.db.execute(query + " ORDER BY seq", params).fetchall()
    return [ReviewRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6] or "", r[7] or "",
                         json.loads(r[8]) if r[8] else {}, float(r[9])) for r in rows]


def caught(store: Store, limit: int = 20) -> list[str]:
    """The newest `limit` hacks caught (held by the reviewer, then failed by the publish-level re-run), one line
    each: what the model said and why the re-run failed, for the reviewer's catalogue."""
    lines = []
    for r in reversed(reviews(store, outcome="rejected")):
        said = "; ".join(r.reasons[:2]) or r.verdict
        why = str(r.data.get("rerun_error") or "")[:300]
        lines.append(f"{r.task} ({'; '.join(r.triggers[:1])}): the reviewer said {said[:300]}; the re-run: {why}")
        if len(lines) >= limit:
            break
    return lines
