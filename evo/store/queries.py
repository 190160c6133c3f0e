"""Read-only queries for analysis: a run's tables as column chunks, for `evo.load` and reports.

Every function here reads; none writes. They are shaped for stores of a million programs:

- columns are chosen by the caller, and JSON fields (metrics, descriptors, token counts, reasons)
  are pulled out by SQLite's `json_extract`, in C, instead of parsing every row in Python;
- rows come back in chunks (`fetchmany`), so memory holds one chunk of tuples at a time
  besides what the caller keeps;
- lookups go through the indexes the writer keeps (`programs.id`, `evaluations.program_id`,
  `events(kind)`); nothing joins on `events.program_id`, which has no index.

`snapshot(store)` wraps a group of reads in one read transaction, so a run that is being
written (WAL: the writer never blocks a reader) is seen as of one commit throughout.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from evo.program import Status
from evo.store.sqlite import EvaluationRecord, Store, _descriptors, _unpack_source

Row = tuple[object, ...]
# 128 MiB of page cache for a reader. No mmap: its mapped pages count as the reader's memory (a scan of a
# 1M-program store showed ~1 GB more resident with mmap_size=1 GiB, for no clear gain in time).
READ_CACHE_KIB = 131072


def tune_for_reading(store: Store) -> None:
    """Give a read-only connection a bigger page cache (per connection; the file is untouched)."""
    store.db.execute(f"PRAGMA cache_size=-{READ_CACHE_KIB}")


@contextmanager
def snapshot(store: Store) -> Iterator[None]:
    """Run the reads inside the block as of one commit of the writer (a read transaction)."""
    if store.db.in_transaction:  # nested: the outer snapshot already pins the view
        yield
        return
    store.db.execute("BEGIN")
    try:
        yield
    finally:
        store.db.execute("COMMIT")


def _path(key: str) -> str:
    """A JSON path naming one object key, quoted so that dots or spaces in a metric name stay literal."""
    return '$."' + key.replace('"', '\\"') + '"'


# -- programs ---------------------------------------------------------------------------------
# Plain columns of `programs` that a caller may ask for by name, and what they are read as.
PROGRAM_FIELDS: dict[str, str] = {
    "id": "p.id",
    "seq": "p.seq",
    "status": "p.status",
    "island": "p.island",
    "operator": "p.operator",
    "created": "p.created",
    "score": "p.score",  # the engine's oriented score (negated for a minimised task): for internal use
    "parents": "p.parents",  # JSON text; the caller parses it
    "error": "p.error",
    "verdict": "json_extract(p.verdict, '$.status')",
    "novelty": "json_extract(p.meta, '$.novelty')",
    "model": "json_extract(p.meta, '$.llm.model')",
    "prompt_tokens": "json_extract(p.meta, '$.llm.prompt_tokens')",
    "completion_tokens": "json_extract(p.meta, '$.llm.completion_tokens')",
    "eval_order": "(SELECT e.n FROM evaluations e WHERE e.program_id = p.id)",
}


@dataclass(frozen=True)
class ProgramQuery:
    """Which program columns to read: plain fields by name, metrics by key, descriptors by position."""

    fields: Sequence[str]
    metrics: Sequence[str] = ()
    descriptors: Sequence[int] = ()
    source: bool = False

    def select(self) -> str:
        exprs = [PROGRAM_FIELDS[f] for f in self.fields]
        exprs += [f"json_extract(p.metrics, '{_path(m)}')" for m in self.metrics]
        exprs += [f"json_extract(p.descriptors, '$[{i}]')" for i in self.descriptors]
        if self.source:
            exprs.append("p.source")
        return ", ".join(exprs) or "p.seq"


def iter_program_rows(store: Store, query: ProgramQuery, *, statuses: Sequence[str] = (),
                      ids: Sequence[str] | None = None, chunk: int = 50_000) -> Iterator[list[Row]]:
    """Rows of `programs` in proposal order, `query`'s columns in its order (fields, metrics,
    descriptors, source as text), in chunks of up to `chunk` rows."""
    unknown = [f for f in query.fields if f not in PROGRAM_FIELDS]
    if unknown:
        raise ValueError(f"unknown program field(s) {unknown}; known: {sorted(PROGRAM_FIELDS)}")
    if ids is not None:  # by id: one index lookup each, in batches under SQLite's variable limit
        for lo in range(0, len(ids), 900):
            part = list(ids[lo : lo + 900])
            sql = (f"SELECT {query.select()} FROM programs p WHERE p.id IN ({','.join('?' * len(part))})"
                   " ORDER BY p.seq")
            rows = store.db.execute(sql, part).fetchall()
            yield [_decode_source(r) for r in rows] if query.source else rows
        return
    where, params = "", tuple(statuses)
    if statuses:
        where = f" WHERE p.status IN ({','.join('?' * len(statuses))})"
    cur = store.db.execute(f"SELECT {query.select()} FROM programs p{where} ORDER BY p.seq", params)
    while rows := cur.fetchmany(chunk):
        yield [_decode_source(r) for r in rows] if query.source else rows


def _decode_source(row: Row) -> Row:
    """The last column, a packed source, as the main file's text (other files joined after it)."""
    src = _unpack_source(row[-1])  # type: ignore[arg-type]
    if isinstance(src, dict):
        main = src.get("candidate.py", "")
        rest = "".join(f"\n# ---- {k}\n{v}" for k, v in sorted(src.items()) if k != "candidate.py")
        src = main + rest
    return (*row[:-1], src)


def metric_keys(store: Store, sample: int = 2000) -> list[str]:
    """Metric names seen in the first and the last `sample` programs that have metrics (not a full scan)."""
    found: dict[str, None] = {}
    for order in ("ASC", "DESC"):
        rows = store.db.execute(
            "SELECT DISTINCT j.key FROM (SELECT metrics FROM programs WHERE metrics IS NOT NULL"
            f" ORDER BY seq {order} LIMIT ?) AS p, json_each(p.metrics) AS j", (sample,))
        found.update((str(r[0]), None) for r in rows)
    return sorted(found)


def metric_keys_of(store: Store, ids: Sequence[str]) -> list[str]:
    """Metric names that the given programs report (index lookups), sorted."""
    found: set[str] = set()
    for lo in range(0, len(ids), 900):
        part = list(ids[lo : lo + 900])
        rows = store.db.execute(f"SELECT DISTINCT j.key FROM programs p, json_each(p.metrics) AS j WHERE p.id IN"
                                f" ({','.join('?' * len(part))}) AND p.metrics IS NOT NULL", part)
        found.update(str(r[0]) for r in rows)
    return sorted(found)


def count_by_status(store: Store) -> dict[str, int]:
    """Programs per status."""
    return dict(store.db.execute("SELECT status, COUNT(*) FROM programs GROUP BY status").fetchall())


def get_source(store: Store, program_id: str) -> str | dict[str, str]:
    """One program's source (a text, or `{path: text}` for a multi-file program)."""
    row = store.db.execute("SELECT source FROM programs WHERE id = ?", (program_id,)).fetchone()
    if row is None:
        raise KeyError(program_id)
    return _unpack_source(row[0])


def parents_of(store: Store, program_ids: Sequence[str]) -> dict[str, tuple[str, list[str], float | None]]:
    """{id: (operator, parent ids, score)} of the given programs (index lookups; missing ids left out)."""
    out: dict[str, tuple[str, list[str], float | None]] = {}
    for lo in range(0, len(program_ids), 900):
        part = list(program_ids[lo : lo + 900])
        rows = store.db.execute(f"SELECT id, operator, parents, score FROM programs WHERE id IN"
                                f" ({','.join('?' * len(part))})", part)
        for pid, op, parents, score in rows:
            out[pid] = (op, json.loads(parents), score)
    return out


def best_ids(store: Store, limit: int) -> list[str]:
    """Ids of the best evaluated programs by score (through the writer's `programs_best` index)."""
    rows = store.db.execute("SELECT id FROM programs WHERE status = 'evaluated' AND score IS NOT NULL"
                            " ORDER BY score DESC, seq LIMIT ?", (limit,))
    return [r[0] for r in rows]


def iter_lineage_rows(store: Store, chunk: int = 100_000) -> Iterator[list[Row]]:
    """(parent, child, parent index, child's operator, child's seq) for every parent link, by child seq."""
    cur = store.db.execute("SELECT j.value, p.id, CAST(j.key AS INTEGER), p.operator, p.seq"
                           " FROM programs p, json_each(p.parents) AS j WHERE p.parents != '[]' ORDER BY p.seq")
    while rows := cur.fetchmany(chunk):
        yield rows


# -- evaluations and events -----------------------------------------------------------------------
def iter_evaluation_order(store: Store, chunk: int = 100_000) -> Iterator[list[Row]]:
    """(n, program id) of every finished evaluation, in commit order (a scan of the small `evaluations`)."""
    cur = store.db.execute("SELECT n, program_id FROM evaluations ORDER BY n")
    while rows := cur.fetchmany(chunk):
        yield rows


EVALUATED_EVENT_FIELDS = ("program_id", "ts", "ok", "wall_s", "admission", "failure", "reason")


def iter_evaluated_events(store: Store, *, reasons: bool = True, chunk: int = 100_000) -> Iterator[list[Row]]:
    """`EVALUATED_EVENT_FIELDS` of every `evaluated` event in order (the first one of a program is the
    one that counted); `reason` is None unless `reasons`."""
    reason = "json_extract(data, '$.reason')" if reasons else "NULL"
    cur = store.db.execute(
        "SELECT program_id, ts, json_extract(data, '$.ok'), json_extract(data, '$.wall_s'),"
        f" json_extract(data, '$.admission'), json_extract(data, '$.reason_kind'), {reason}"
        " FROM events WHERE kind = 'evaluated' ORDER BY seq")
    while rows := cur.fetchmany(chunk):
        yield rows


def iter_replay(store: Store, upto: int | None = None, chunk: int = 20_000, times: bool = True
                ) -> Iterator[tuple[EvaluationRecord, float]]:
    """(record, commit time) of every finished evaluation in commit order, up to evaluation number `upto`:
    what `evo.replay` admits, bounded, with the time each was committed (NaN without `times`)."""
    bound = "" if upto is None else " WHERE e.n <= ?"
    cur = store.db.execute(
        "SELECT e.n, p.id, p.island, p.status, p.score, p.descriptors FROM evaluations e"
        f" JOIN programs p ON p.id = e.program_id{bound} ORDER BY e.n", () if upto is None else (upto,))
    times = _evaluation_times(store) if times else (lambda _pid: math.nan)
    statuses = {str(s): s for s in Status}
    while rows := cur.fetchmany(chunk):
        for n, pid, island, status, score, descs in rows:
            record = EvaluationRecord(n, pid, island, statuses[status], score, _descriptors(descs))
            yield record, times(pid)


def _evaluation_times(store: Store) -> Callable[[str], float]:
    """A lookup of each program's evaluation time, asked in commit order.

    The `evaluated` events come in the same order as the evaluation numbers (the writer commits
    both in one transaction), so the two streams are walked side by side; an event out of step
    (never seen in practice) waits in a dict. Memory stays one cursor's chunk, not a dict of 1M.
    """
    cur = store.db.execute("SELECT program_id, ts FROM events WHERE kind = 'evaluated' ORDER BY seq")
    ahead: dict[str, float] = {}
    seen: set[str] = set()
    buffer: list[tuple[str, float]] = []

    def lookup(pid: str) -> float:
        if pid in ahead:
            return ahead.pop(pid)
        while True:
            if not buffer:
                buffer.extend(reversed(cur.fetchmany(20_000)))
                if not buffer:
                    return math.nan
            other, ts = buffer.pop()
            if other == pid:
                return ts
            if other not in seen:  # a program's first evaluated event is the one that counted
                seen.add(other)
                ahead[other] = ts

    return lookup


def iter_event_rows(store: Store, kinds: Sequence[str], fields: Sequence[str], *, chunk: int = 50_000
                    ) -> Iterator[list[Row]]:
    """(seq, ts, kind, program_id, *fields) of the events of `kinds`, in order; each field is a JSON path
    into the event's data (`$.cell`, `$.llm.model`)."""
    extra = "".join(f", json_extract(data, '{f}')" for f in fields)
    cur = store.db.execute(f"SELECT seq, ts, kind, program_id{extra} FROM events WHERE kind IN"
                           f" ({','.join('?' * len(kinds))}) ORDER BY seq", tuple(kinds))
    while rows := cur.fetchmany(chunk):
        yield rows


def programs_by_id(store: Store, ids: Sequence[str], fields: Sequence[str], metrics: Sequence[str] = ()
                   ) -> dict[str, Row]:
    """{id: (fields..., metrics...)} for the given ids (index lookups)."""
    query = ProgramQuery(("id", *fields), metrics)
    out: dict[str, Row] = {}
    for rows in iter_program_rows(store, query, ids=list(dict.fromkeys(ids))):
        out.update((str(r[0]), r[1:]) for r in rows)
    return out


def iter_reason_rows(store: Store, ids: Sequence[str] | None = None, chunk: int = 50_000) -> Iterator[list[Row]]:
    """(program id, verdict level, check, reason) for every reason of every failed verdict (of `ids` only,
    if given: one index lookup each)."""
    select = ("SELECT p.id, json_extract(p.verdict, '$.level'), json_extract(r.value, '$.check'),"
              " json_extract(r.value, '$.reason') FROM programs p, json_each(p.verdict, '$.reasons') AS r")
    if ids is not None:
        for lo in range(0, len(ids), 900):
            part = list(ids[lo : lo + 900])
            yield store.db.execute(f"{select} WHERE p.id IN ({','.join('?' * len(part))}) AND json_valid(p.verdict)"
                                   " ORDER BY p.seq", part).fetchall()
        return
    # instr() first: a cheap text test that every failed verdict passes (its status is the JSON string
    # "fail"), so that only those few are parsed as JSON.
    cur = store.db.execute(f"{select} WHERE instr(p.verdict, '\"fail\"') > 0 AND json_valid(p.verdict)"
                           " AND json_extract(p.verdict, '$.status') = 'fail' ORDER BY p.seq")
    while rows := cur.fetchmany(chunk):
        yield rows


# -- embeddings -----------------------------------------------------------------------------------
def embedding_dim(store: Store) -> int:
    """Length of the stored embeddings (0 if none is stored)."""
    row = store.db.execute("SELECT length(embedding) FROM programs WHERE embedding IS NOT NULL LIMIT 1").fetchone()
    return 0 if row is None else int(row[0]) // 4


def read_embeddings(store: Store, *, ids: Sequence[str] | None = None, sample: int | None = None,
                    seed: int = 0, chunk: int = 20_000) -> tuple[list[str], np.ndarray]:
    """(ids, float32 matrix) of stored embeddings in proposal order: all of them, those of `ids`, or a
    uniform random `sample` of them (drawn by seq, each row one rowid lookup: no scan)."""
    dim = embedding_dim(store)
    out_ids: list[str] = []
    parts: list[np.ndarray] = []

    def take(rows: list[Row]) -> None:
        rows = [r for r in rows if r[1] is not None]
        out_ids.extend(str(r[0]) for r in rows)
        if rows:
            parts.append(np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim))  # type: ignore[misc]

    if ids is not None:
        for lo in range(0, len(ids), 900):
            part = list(ids[lo : lo + 900])
            take(store.db.execute(f"SELECT id, embedding FROM programs WHERE id IN ({','.join('?' * len(part))})"
                                  " ORDER BY seq", part).fetchall())
    elif sample is not None:
        lo, hi = store.db.execute("SELECT MIN(seq), MAX(seq) FROM programs").fetchone()
        if lo is not None:
            span = range(lo, hi + 1)
            picks = sorted(random.Random(seed).sample(span, min(len(span), 2 * sample)))
            for i in range(0, len(picks), 900):
                part = picks[i : i + 900]
                take(store.db.execute(f"SELECT id, embedding FROM programs WHERE seq IN ({','.join('?' * len(part))})"
                                      " AND embedding IS NOT NULL ORDER BY seq", part).fetchall())
                if len(out_ids) >= sample:
                    break
            if len(out_ids) > sample:  # rows without an embedding were skipped: keep an even spread
                keep = np.linspace(0, len(out_ids) - 1, sample).astype(int)
                mat = np.concatenate(parts)[keep]
                return [out_ids[k] for k in keep], mat
    else:
        cur = store.db.execute("SELECT id, embedding FROM programs WHERE embedding IS NOT NULL ORDER BY seq")
        while rows := cur.fetchmany(chunk):
            take(rows)
    mat = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    return out_ids, mat


# -- the live view (evo/report/ui/): bounded reads, each a few index lookups or a LIMITed range -------
def last_event_seq(store: Store) -> int:
    """The seq of the newest event (0 if none): one rowid lookup, the cheap "has anything changed?"."""
    row = store.db.execute("SELECT MAX(seq) FROM events").fetchone()
    return int(row[0] or 0)


def evaluation_count(store: Store) -> int:
    """Finished evaluations: their numbers are dense (1, 2, ...), so the largest is the count (a rowid
    lookup; COUNT(*) would read the whole table)."""
    row = store.db.execute("SELECT MAX(n) FROM evaluations").fetchone()
    return int(row[0] or 0)


def program_count(store: Store) -> int:
    """Programs stored: the largest seq (programs are never deleted, so it is their count)."""
    row = store.db.execute("SELECT MAX(seq) FROM programs").fetchone()
    return int(row[0] or 0)


def events_after(store: Store, kinds: Sequence[str], after: int, fields: Sequence[str] = (), *, limit: int = 50_000
                 ) -> list[Row]:
    """(seq, ts, kind, program_id, *fields) of the events of `kinds` newer than seq `after`, oldest first,
    at most `limit` of them: a live reader's tail (one range of the `events(kind)` index per kind)."""
    extra = "".join(f", json_extract(data, '{f}')" for f in fields)
    rows: list[Row] = []
    for kind in kinds:  # one kind per query: `kind = ? AND seq > ?` is a single index range
        rows += store.db.execute(f"SELECT seq, ts, kind, program_id{extra} FROM events WHERE kind = ? AND seq > ?"
                                 " ORDER BY seq LIMIT ?", (kind, after, limit)).fetchall()
    rows.sort(key=lambda r: r[0])  # type: ignore[arg-type, return-value]
    return rows[:limit]


def latest_events(store: Store, kind: str, fields: Sequence[str] = (), *, limit: int = 10_000) -> list[Row]:
    """(seq, ts, kind, program_id, *fields) of the newest `limit` events of one kind, newest first (the
    `events(kind)` index read backwards: no scan, however long the run)."""
    extra = "".join(f", json_extract(data, '{f}')" for f in fields)
    return store.db.execute(f"SELECT seq, ts, kind, program_id{extra} FROM events WHERE kind = ?"
                            " ORDER BY seq DESC LIMIT ?", (kind, limit)).fetchall()


def evaluated_near(store: Store, seqs: Sequence[int]) -> list[tuple[int, float]]:
    """For each event seq given, the first `evaluated` event at or after it: (its evaluation number, its
    time). Three index lookups a point: how a progress curve is sampled without reading every event."""
    out: list[tuple[int, float]] = []
    for s in seqs:
        row = store.db.execute("SELECT e.ts, v.n FROM events e JOIN evaluations v ON v.program_id = e.program_id"
                               " WHERE e.kind = 'evaluated' AND e.seq >= ? ORDER BY e.seq LIMIT 1", (s,)).fetchone()
        if row is not None and (not out or row[1] != out[-1][0]):
            out.append((int(row[1]), float(row[0])))
    return out


def best_records(store: Store, limit: int = 2000) -> list[tuple[int, str, float]]:
    """(evaluation number, id, score) of each program that was the best so far when it was evaluated,
    in evaluation order, for the part of the run that the `limit` best programs cover (the whole curve
    once it has fewer records below them). Read through the `programs_best` index, one lookup each."""
    rows = store.db.execute(
        "SELECT v.n, p.id, p.score FROM programs p JOIN evaluations v ON v.program_id = p.id"
        " WHERE p.status = 'evaluated' AND p.score IS NOT NULL ORDER BY p.score DESC, p.seq LIMIT ?",
        (limit,)).fetchall()
    records: list[tuple[int, str, float]] = []
    first = math.inf  # the earliest evaluation among the better ones seen so far
    for n, pid, score in rows:  # best first: a record is one evaluated before every better program
        if n < first:
            records.append((int(n), str(pid), float(score)))
            first = n
    return records[::-1]


def first_programs(store: Store, fields: Sequence[str], limit: int = 1000) -> list[Row]:
    """`fields` of the first `limit` programs by seq (a rowid range): where a run's seeds are."""
    query = ProgramQuery(fields)
    return store.db.execute(f"SELECT {query.select()} FROM programs p ORDER BY p.seq LIMIT ?", (limit,)).fetchall()


def table_exists(store: Store, name: str) -> bool:
    """Whether the store has a table `name` (tables a later version adds, such as lessons)."""
    row = store.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None


def latest_rows(store: Store, table: str, limit: int = 50) -> tuple[list[str], list[Row]]:
    """(column names, the newest `limit` rows by rowid) of a table whose shape this version does not know.
    `table` must be one `table_exists` found (it is spliced into the SQL)."""
    if not table.isidentifier() or not table_exists(store, table):
        raise ValueError(f"no table {table!r} in this store")
    cur = store.db.execute(f'SELECT * FROM "{table}" ORDER BY rowid DESC LIMIT ?', (limit,))
    return [d[0] for d in cur.description], cur.fetchall()
