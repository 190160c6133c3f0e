"""The store's lessons: versioned summaries of what a search learned, and the reads they are built from.

A lesson is text (a model's, or a structured summary) written by the engine every few hundred
evaluations and when a run resumes (evo/lessons.py). Each is kept, never overwritten: the
`lessons` table holds one row per (run, task, version), with the evaluation count it was written
at and where it came from (`structured`, `model:NAME`). Lessons carried from another run
(`--lessons-from`) keep their own run and version and say so in `carried_from`.

The table is created on first write, so stores made before it existed read as having no lessons.
Like the rest of evo/store/, this module is the only place these tables are spoken to in SQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from evo.store.sqlite import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lessons (
    seq INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    task TEXT NOT NULL,
    version INTEGER NOT NULL,
    evaluations INTEGER NOT NULL,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT,
    carried_from TEXT,
    created REAL NOT NULL,
    UNIQUE (run, task, version)
);
"""


@dataclass
class Lesson:
    """One version of a task's lessons. `source` is "structured" or "model:NAME"; `data` the statistics
    it was written from; `carried_from` the run directory it was brought from (None: written here)."""

    run: str
    task: str
    version: int
    evaluations: int
    source: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    carried_from: str | None = None
    created: float = 0.0


def _has_table(store: Store) -> bool:
    return store.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lessons'").fetchone() is not None


def run_id(store: Store) -> str:
    """The run's identity for its lessons: set once (a run directory may be moved or copied)."""
    rid = store.get_meta("run_id")
    if rid is None:
        import uuid

        rid = uuid.uuid4().hex
        with store.db:
            store.set_meta("run_id", rid)
    return str(rid)


def add_lesson(store: Store, run: str, task: str, evaluations: int, source: str, text: str,
               data: dict[str, Any] | None = None, *, version: int | None = None,
               carried_from: str | None = None) -> Lesson:
    """Store a lesson as the next version of (run, task) (or as `version`, for a carried one); returns it."""
    with store.db:
        store._begin()  # joins proposals deferred by add_program(commit=False): they commit with the lesson
        store.db.execute(_SCHEMA.strip().rstrip(";"))
        if version is None:
            row = store.db.execute("SELECT MAX(version) FROM lessons WHERE run = ? AND task = ?", (run, task)).fetchone()
            version = int(row[0] or 0) + 1
        now = time.time()
        store.db.execute(
            "INSERT OR IGNORE INTO lessons(run, task, version, evaluations, source, text, data, carried_from, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run, task, version, evaluations, source, text, json.dumps(data or {}), carried_from, now),
        )
    return Lesson(run, task, version, evaluations, source, text, dict(data or {}), carried_from, now)


def lessons(store: Store, task: str | None = None, *, carried: bool | None = None) -> list[Lesson]:
    """Every lesson (of `task`), oldest first; `carried` True/False keeps only carried/own ones."""
    if not _has_table(store):
        return []
    query = "SELECT run, task, version, evaluations, source, text, data, carried_from, created FROM lessons"
    where, params = [], []
    if task is not None:
        where.append("task = ?")
        params.append(task)
    if carried is not None:
        where.append("carried_from IS NOT NULL" if carried else "carried_from IS NULL")
    if where:
        query += " WHERE " + " AND ".join(where)
    rows = store.db.execute(query + " ORDER BY seq", params).fetchall()
    return [Lesson(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5], json.loads(r[6]) if r[6] else {}, r[7], float(r[8]))
            for r in rows]


def latest_lessons(store: Store) -> list[Lesson]:
    """The newest lesson of each (run, task), newest first: what a new run carries from this one."""
    newest: dict[tuple[str, str], Lesson] = {}
    for lesson in lessons(store):
        newest[(lesson.run, lesson.task)] = lesson
    return sorted(newest.values(), key=lambda x: x.created, reverse=True)


# -- the reads a lesson is written from -------------------------------------------------------


@dataclass
class Outcome:
    """One finished evaluation of a made (not seed) program, for the statistics of a lesson."""

    operator: str
    ok: bool
    admission: str | None  # "new", "improve", "rejected" or None (failed)
    score: float | None
    parent_score: float | None
    reason_kind: str | None
    reason: str | None
    verdict: dict[str, Any] | None  # a failed evaluation's only: what lessons read (the reasons it was refused)
    meta: dict[str, Any]
    program_id: str
    parent_id: str | None


_OUTCOMES = (
    "SELECT ev.seq, p.id, p.operator, p.status, p.score, CASE WHEN p.status != 'evaluated' THEN p.verdict END,"
    " p.meta, ev.data, par.score,"
    " json_extract(p.parents, '$[0]')"
    " FROM events ev JOIN programs p ON p.id = ev.program_id"
    " LEFT JOIN programs par ON par.id = json_extract(p.parents, '$[0]')"
    " WHERE ev.kind = 'evaluated' AND ev.seq > ? ORDER BY ev.seq DESC LIMIT ?"
)


def recent_outcomes(store: Store, window: int) -> Iterator[Outcome]:
    """The last `window` finished evaluations, newest first, with the first parent's score (a delta)."""
    for _, outcome in _outcomes_after(store, 0, window):
        yield outcome


def _outcomes_after(store: Store, after: int, window: int) -> list[tuple[int, Outcome]]:
    """(event seq, outcome) of the last `window` finished evaluations whose event comes after `after`, newest first."""
    # From the `evaluated` events (their kind is indexed) to the programs (by id): nothing joins on
    # events.program_id, which has no index. A passing program's verdict (kilobytes of JSON, every check) is
    # neither read nor parsed: lessons look at the reasons of refusals only (parsing 2,000 verdicts was most of
    # a lesson's cost, every 200 evaluations).
    out = []
    for seq, pid, operator, status, score, verdict, meta, data, parent_score, parent_id in \
            store.db.execute(_OUTCOMES, (after, window)).fetchall():
        info = json.loads(data) if data else {}
        try:
            parsed_verdict = json.loads(verdict) if verdict else None
        except ValueError:
            parsed_verdict = None
        out.append((seq, Outcome(operator, status == "evaluated", info.get("admission"), score, parent_score,
                                 info.get("reason_kind"), info.get("reason"),
                                 parsed_verdict if isinstance(parsed_verdict, dict) else None,
                                 json.loads(meta) if meta else {}, pid, parent_id)))
    return out


class RecentOutcomes:
    """`recent_outcomes(store, window)` as a list, kept by reading only the evaluations finished since the last
    call (a lesson every 200 evaluations otherwise reads and parses 2,000 rows, most of its cost).

    What a kept outcome holds cannot change afterwards, save through a re-timing (a program's score, status and
    verdict, its parent's score), which writes a `retimed` event: after one, everything is read again. A parent
    that had no score when read (not stored or not evaluated yet) is looked up again on every call.
    """

    def __init__(self, store: Store, window: int) -> None:
        self.store, self.window = store, window
        self._kept: list[tuple[int, Outcome]] = []  # newest first
        self._seen = 0  # the newest event read (of any kind): evaluations and re-timings after it are new

    def read(self) -> list[Outcome]:
        """The last `window` finished evaluations, newest first: equal to `list(recent_outcomes(...))`."""
        db = self.store.db
        newest = db.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
        retimed = db.execute("SELECT MAX(seq) FROM events WHERE kind = 'retimed'").fetchone()[0] or 0
        after = 0 if retimed > self._seen else self._kept[0][0] if self._kept else 0
        kept = self._kept if after else []
        self._kept = (_outcomes_after(self.store, after, self.window) + kept)[: self.window]
        self._seen = newest
        unscored = {o.parent_id for _, o in self._kept if o.parent_id is not None and o.parent_score is None}
        if unscored:
            scores = _scores(self.store, unscored)
            for _, o in self._kept:
                if o.parent_id is not None and o.parent_score is None:
                    o.parent_score = scores.get(o.parent_id)
        return [o for _, o in self._kept]


def _scores(store: Store, ids: set[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    ordered = sorted(ids)
    for i in range(0, len(ordered), 500):  # within SQLite's limit on bound parameters
        chunk = ordered[i : i + 500]
        out.update(store.db.execute(f"SELECT id, score FROM programs WHERE id IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchall())
    return out


def recent_rejections(store: Store, window: int) -> list[tuple[str, str, str]]:
    """(operator, reason kind, reason) of the last `window` failed operator calls and `window` children turned away."""
    failed = store.db.execute(
        "SELECT json_extract(data, '$.operator'), json_extract(data, '$.reason_kind'), json_extract(data, '$.reason')"
        " FROM events WHERE kind = 'operator_failed' ORDER BY seq DESC LIMIT ?", (window,)).fetchall()
    rejected = store.db.execute(
        "SELECT p.operator, json_extract(ev.data, '$.reason_kind'), json_extract(ev.data, '$.reason')"
        " FROM events ev JOIN programs p ON p.id = ev.program_id WHERE ev.kind = 'rejected'"
        " ORDER BY ev.seq DESC LIMIT ?", (window,)).fetchall()
    return [(str(o or "?"), str(k or "?"), str(r or "")) for o, k, r in failed + rejected]
