"""The run's store: one SQLite file (WAL) holding every program, evaluation and event.

Two tables carry the run:

- `events`: the append-only log. Every operator call, proposal (accepted or rejected, with
  the reason), finished evaluation, admission and migration is one row, in order.
- `programs`: one row per proposed program (compressed source, lineage, embedding, state),
  so that a program is one indexed lookup away.

`evaluations` counts the finished evaluations: its rowid is the evaluation order, which is
what the population is rebuilt from on resume. A finished evaluation, its event and the
program's new state are written in one transaction, committed before the engine acts on
it; a `kill -9` at any point loses at most evaluations that were still running, and those
programs stay `proposed`, to be evaluated again on resume, never counted twice.

Only this module speaks SQL.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring_ascii
from pathlib import Path
from typing import Any

import numpy as np

from evo.errors import EvoError
from evo.program import Program, Status
from evo.store.transfer import add_transfers

DB_NAME = "evo.db"
SCHEMA_VERSION = 1
CACHE_KIB = 65536

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS programs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    source BLOB NOT NULL,
    parents TEXT NOT NULL,
    operator TEXT NOT NULL,
    island INTEGER NOT NULL,
    status TEXT NOT NULL,
    score REAL,
    metrics TEXT,
    descriptors TEXT,
    error TEXT,
    verdict TEXT,
    embedding BLOB,
    meta TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS programs_pending ON programs(status) WHERE status = 'proposed';
CREATE INDEX IF NOT EXISTS programs_best ON programs(score DESC, seq)
    WHERE status = 'evaluated' AND score IS NOT NULL;
CREATE TABLE IF NOT EXISTS evaluations (
    n INTEGER PRIMARY KEY,
    program_id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    program_id TEXT,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
CREATE TABLE IF NOT EXISTS provenance (
    program_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    commit_sha TEXT,
    path TEXT,
    licence TEXT,
    data TEXT NOT NULL
);
"""


_PLAIN = json.JSONEncoder()  # its `default` raises json's own TypeError for what JSON cannot hold


def _dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`json.dumps(obj, default=default)`, the same text: the C encoder that json.dumps builds for one call
    (fresh circular-reference markers included), without the JSONEncoder and the two Python calls around it
    (~2.5 of ~4 us; the engine writes ~9 JSON values a candidate)."""
    if c_make_encoder is None:  # a Python without json's C accelerator
        return json.dumps(obj, default=default)
    encode = c_make_encoder({}, default or _PLAIN.default, encode_basestring_ascii, None, ": ", ", ", False, False,
                            True)
    return "".join(encode(obj, 0))


def _pack_source(source: Any) -> bytes:
    text = encode_basestring_ascii(source) if isinstance(source, str) else _dumps(source)  # = json.dumps(source)
    return zlib.compress(text.encode(), 1)  # level 1: 3x faster than 6, ~10% larger


def _unpack_source(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))


def _descriptors(text: str | None) -> tuple[float, ...]:
    """The stored JSON list of floats, read back (resume replays this for every evaluation).

    `json.dumps` of finite floats writes each one as Python's repr, which `float` parses
    exactly: ~5x cheaper than `json.loads` here.
    """
    if not text or text == "[]":
        return ()
    return tuple(map(float, text[1:-1].split(",")))


@dataclass
class EvaluationRecord:
    """One finished evaluation, as replayed on resume (in evaluation order)."""

    n: int
    program_id: str
    island: int
    status: Status
    score: float | None
    descriptors: tuple[float, ...]


class Store:
    """A run's SQLite store. One writer (the engine); readers may open the file alongside."""

    def __init__(self, path: Path, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise EvoError(f"no run store at {self.path}: is this an evo run directory?")
            uri = f"file:{self.path}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                self.db.execute("PRAGMA journal_mode=WAL")  # the first read of the file: a foreign one fails here
            except sqlite3.DatabaseError as e:
                self.db.close()
                raise EvoError(f"{self.path} is not an evo store (SQLite said: {e})") from e
            # NORMAL in WAL mode: a commit survives a killed process (it is in the WAL file);
            # only a power cut may lose the last commits. That is the failure we design for.
            self.db.execute("PRAGMA synchronous=NORMAL")
            # 64 MiB of page cache (SQLite's default is 2 MiB): at 1M programs the id index alone
            # is ~50 MB, and every admission touches it at a random place.
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            # Checkpoint the WAL every 8,192 pages (32 MiB) instead of 1,000: each checkpoint ends in an
            # fsync, and pages rewritten between checkpoints are copied once (store cost per
            # evaluation measured 1.06 -> 0.65 ms).
            self.db.execute("PRAGMA wal_autocheckpoint=8192")
            self.db.executescript(_SCHEMA)
        self.db.execute("PRAGMA busy_timeout=5000")
        try:
            version = self.get_meta("schema_version")
        except sqlite3.DatabaseError as e:
            raise EvoError(f"{self.path} is not an evo store (SQLite said: {e})") from e
        if version is None and not readonly:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version is not None and version != SCHEMA_VERSION:
            raise EvoError(f"{self.path} has store schema {version}; this evo reads schema {SCHEMA_VERSION}")

    @classmethod
    def in_dir(cls, run_dir: Path, *, readonly: bool = False) -> Store:
        return cls(Path(run_dir) / DB_NAME, readonly=readonly)

    def close(self) -> None:
        """Commit anything deferred, then close."""
        if self.db.in_transaction:
            self.db.commit()
        self.db.close()

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- writes -------------------------------------------------------------------------
    def _event(self, kind: str, program_id: str | None, data: dict[str, Any] | None, ts: float) -> None:
        self.db.execute(
            "INSERT INTO events(ts, kind, program_id, data) VALUES (?, ?, ?, ?)",
            (ts, kind, program_id, None if data is None else _dumps(data)),
        )

    def log(self, kind: str, data: dict[str, Any] | None = None, program_id: str | None = None) -> None:
        """Append one event in its own transaction."""
        with self.db:
            self._begin()
            self._event(kind, program_id, data, time.time())

    def _begin(self) -> None:
        """Open a transaction unless one is open already (writes deferred by `add_program(commit=False)`)."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN")

    def add_program(
        self,
        program: Program,
        embedding: np.ndarray | None,
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        commit: bool = True,
    ) -> int:
        """Insert a proposed (or rejected) program with its events; returns its `seq`.

        With `commit=False` the rows join the open transaction and are committed by the next write
        that commits (in the engine: the next finished evaluation), which halves the commits per
        candidate. A process killed before then loses that proposal, never an evaluation: it had
        not been evaluated, and the budget counts evaluations.
        """
        now = time.time()
        if not commit:
            self._begin()
            seq = self._insert_program(program, embedding, events, now)
            return seq
        with self.db:
            self._begin()
            seq = self._insert_program(program, embedding, events, now)
        return seq

    def _insert_program(self, program: Program, embedding: np.ndarray | None,
                        events: Sequence[tuple[str, dict[str, Any]]], now: float) -> int:
        cur = self.db.execute(
            "INSERT INTO programs(id, hash, source, parents, operator, island, status, score, metrics,"
            " descriptors, error, verdict, embedding, meta, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?, ?, ?, ?)",
            (
                program.id,
                program.hash,
                _pack_source(program.source),
                _dumps(list(program.parents)),
                program.operator,
                program.island,
                str(program.status),
                program.error,
                program.verdict,
                None if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes(),
                _dumps(program.meta, default=str),
                now,
            ),
        )
        for kind, data in events:
            self._event(kind, program.id, data, now)
        if program.meta.get("transfer") and program.operator != "seed":  # a suite run's cross-task sources
            add_transfers(self, program.id, program.meta["transfer"])  # type: ignore[arg-type]
        seq = cur.lastrowid
        assert seq is not None
        program.seq = seq
        return seq

    def add_provenance(self, program_id: str, provenance: dict[str, Any]) -> None:
        """Where a seed came from (source, kind, commit, path, licence; the rest in `data`), in the open
        transaction: written with its program, committed with it."""
        self._begin()
        self.db.execute(
            "INSERT OR REPLACE INTO provenance(program_id, source, kind, commit_sha, path, licence, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (program_id, str(provenance.get("source", "")), str(provenance.get("kind", "")),
             provenance.get("commit"), provenance.get("path"), provenance.get("licence"),
             json.dumps(provenance, default=str)),
        )

    def provenance(self, program_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """{program id: provenance} of the seeds that came from outside the run (all, or those asked)."""
        q, params = "SELECT program_id, data FROM provenance", ()
        if program_ids is not None:
            q += f" WHERE program_id IN ({','.join('?' * len(program_ids))})"
            params = tuple(program_ids)
        try:
            rows = self.db.execute(q + " ORDER BY rowid", params).fetchall()
        except sqlite3.OperationalError as e:  # a store written before the table, opened read-only
            if "no such table" in str(e):
                return {}
            raise
        return {pid: json.loads(data) for pid, data in rows}

    def valid_ids(self, operator: str | None = None) -> list[str]:
        """Ids of every program evaluated with a valid score (of one operator, if named), in evaluation order."""
        q = ("SELECT p.id FROM evaluations e JOIN programs p ON p.id = e.program_id"
             " WHERE p.status = 'evaluated' AND p.score IS NOT NULL")
        params: tuple = ()
        if operator is not None:
            q += " AND p.operator = ?"
            params = (operator,)
        return [r[0] for r in self.db.execute(q + " ORDER BY e.n", params)]

    def commit(self) -> None:
        """Commit writes deferred by `add_program(commit=False)` (the engine calls this when it stops)."""
        if self.db.in_transaction:
            self.db.commit()

    def add_programs(self, programs: Sequence[Program], embeddings: np.ndarray | Sequence[Any] | None = None) -> None:
        """Insert many programs, each in the state it is in, in one transaction (imports, seeding, benchmarks).

        Every program gets a `proposed` event (a rejected one a `rejected` event instead); a
        finished one (evaluated or failed) also gets its evaluation row, in the given order, and
        an `evaluated` event, exactly as `add_program` then `record_evaluation` would leave it
        (without an admission: the population decides that on replay). `embeddings`: one row per
        program (None for none). ~20x faster per program than one `add_program` each.
        """
        if embeddings is not None and len(embeddings) != len(programs):
            raise ValueError(f"add_programs: {len(programs)} programs but {len(embeddings)} embeddings")
        now = time.time()
        finished = (Status.EVALUATED, Status.FAILED)
        rows, events, evaluated = [], [], []
        for i, p in enumerate(programs):
            emb = None if embeddings is None else embeddings[i]
            rows.append((
                p.id, p.hash, _pack_source(p.source), json.dumps(list(p.parents)), p.operator, p.island,
                str(p.status), p.score, json.dumps(p.metrics) if p.status in finished else None,
                json.dumps(list(p.descriptors)) if p.status in finished else None, p.error, p.verdict,
                None if emb is None else np.asarray(emb, dtype=np.float32).tobytes(),
                json.dumps(p.meta, default=str), now,
            ))
            if p.status == Status.REJECTED:
                events.append((now, "rejected", p.id, json.dumps({"reason_kind": "imported", "reason": p.error})))
                continue
            events.append((now, "proposed", p.id, json.dumps({"operator": p.operator, "island": p.island})))
            if p.status in finished:
                evaluated.append((p.id,))
                data: dict[str, Any] = {"ok": p.status == Status.EVALUATED, "score": p.score}
                if p.status == Status.FAILED:
                    data.update(reason_kind="failed", reason=p.error)
                events.append((now, "evaluated", p.id, json.dumps(data)))
        with self.db:
            self._begin()
            first = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM programs").fetchone()[0]
            self.db.executemany(
                "INSERT INTO programs(id, hash, source, parents, operator, island, status, score, metrics,"
                " descriptors, error, verdict, embedding, meta, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self.db.executemany("INSERT INTO evaluations(program_id) VALUES (?)", evaluated)
            self.db.executemany("INSERT INTO events(ts, kind, program_id, data) VALUES (?, ?, ?, ?)", events)
        for i, p in enumerate(programs):  # one writer: the rows took consecutive seqs
            p.seq = first + i

    def record_evaluation(self, program: Program, data: dict[str, Any], admission: dict[str, Any] | None) -> bool:
        """Commit a finished evaluation (and its admission) in one transaction.

        Returns False, writing nothing, if this program's evaluation was already recorded:
        a resumed run can never count one program twice.
        """
        now = time.time()
        with self.db:
            self._begin()
            cur = self.db.execute(
                "UPDATE programs SET status = ?, score = ?, metrics = ?, descriptors = ?, error = ?, verdict = ?"
                " WHERE id = ? AND status = 'proposed'",
                (
                    str(program.status),
                    program.score,
                    _dumps(program.metrics),
                    _dumps(list(program.descriptors)),
                    program.error,
                    program.verdict,
                    program.id,
                ),
            )
            if cur.rowcount != 1:
                return False
            self.db.execute("INSERT INTO evaluations(program_id) VALUES (?)", (program.id,))
            self._event("evaluated", program.id, data, now)
            if admission is not None:
                self._event("admitted", program.id, admission, now)
        return True

    def record_retiming(self, program: Program, data: dict[str, Any]) -> None:
        """Replace an evaluated program's score (and metrics, status, error) by a new measurement.

        Used when elites are re-timed (a resumed kernel run, maybe on another GPU): the replay reads
        the current score, so the population rebuilt from the store is the one the engine holds.
        Writes a `retimed` event with `data` (old and new score); never a second evaluation row.
        """
        with self.db:
            self._begin()
            self.db.execute(
                "UPDATE programs SET status = ?, score = ?, metrics = ?, error = ?, verdict = COALESCE(?, verdict)"
                " WHERE id = ?",
                (str(program.status), program.score, json.dumps(program.metrics), program.error, program.verdict,
                 program.id),
            )
            self._event("retimed", program.id, data, time.time())

    # -- reads --------------------------------------------------------------------------
    def count_evaluations(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]

    def count_programs(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM programs").fetchone()[0]

    def count_events(self, kind: str | None = None) -> int:
        if kind is None:
            return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM events WHERE kind = ?", (kind,)).fetchone()[0]

    def event_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())

    def _program(self, row: tuple) -> Program:
        (seq, pid, _h, src, parents, op, island, status, score, metrics, descs, error, verdict, _emb, meta) = row
        return Program(
            source=_unpack_source(src),
            id=pid,
            parents=tuple(json.loads(parents)),
            operator=op,
            island=island,
            seq=seq,
            status=Status(status),
            score=score,
            metrics=json.loads(metrics) if metrics else {},
            descriptors=tuple(json.loads(descs)) if descs else (),
            error=error,
            verdict=verdict,
            meta=json.loads(meta) if meta else {},
        )

    _COLUMNS = (
        "seq, id, hash, source, parents, operator, island, status, score, metrics, descriptors,"
        " error, verdict, embedding, meta"
    )

    def get_program(self, program_id: str) -> Program:
        row = self.db.execute(f"SELECT {self._COLUMNS} FROM programs WHERE id = ?", (program_id,)).fetchone()
        if row is None:
            raise KeyError(program_id)
        return self._program(row)

    def pending_programs(self) -> list[Program]:
        """Programs proposed but never evaluated (in flight when the run stopped), oldest first."""
        rows = self.db.execute(
            f"SELECT {self._COLUMNS} FROM programs WHERE status = 'proposed' ORDER BY seq"
        ).fetchall()
        return [self._program(r) for r in rows]

    def iter_programs(self, *, statuses: Sequence[str] | None = None, batch: int = 5000) -> Iterator[Program]:
        """Every program in proposal order (optionally only some statuses), streamed."""
        where = ""
        params: tuple = ()
        if statuses:
            where = f" WHERE status IN ({','.join('?' * len(statuses))})"
            params = tuple(statuses)
        cur = self.db.execute(f"SELECT {self._COLUMNS} FROM programs{where} ORDER BY seq", params)
        while rows := cur.fetchmany(batch):
            yield from (self._program(r) for r in rows)

    def iter_embeddings(self, dim: int, batch: int = 20000) -> Iterator[tuple[list[str], np.ndarray]]:
        """(ids, float32 matrix) of every screened program, in proposal order, for the novelty index."""
        cur = self.db.execute(
            "SELECT id, embedding FROM programs WHERE status != 'rejected' AND embedding IS NOT NULL ORDER BY seq"
        )
        while rows := cur.fetchmany(batch):
            ids = [r[0] for r in rows]
            mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, mat

    def iter_evaluations(self) -> Iterator[EvaluationRecord]:
        """Every finished evaluation in the order it was committed: the replay log of the population."""
        cur = self.db.execute(
            "SELECT e.n, p.id, p.island, p.status, p.score, p.descriptors"
            " FROM evaluations e JOIN programs p ON p.id = e.program_id ORDER BY e.n"
        )
        statuses = {str(s): s for s in Status}
        while rows := cur.fetchmany(5000):
            for n, pid, island, status, score, descs in rows:
                yield EvaluationRecord(n, pid, island, statuses[status], score, _descriptors(descs))

    def best_programs(self, limit: int = 10) -> list[Program]:
        rows = self.db.execute(
            f"SELECT {self._COLUMNS} FROM programs WHERE status = 'evaluated' AND score IS NOT NULL"
            " ORDER BY score DESC, seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._program(r) for r in rows]

    def operator_totals(self) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """({operator: (calls, completion tokens)}, {operator: admissions}): the bandit's memory."""
        calls = {
            op: (n, int(tokens or 0))
            for op, n, tokens in self.db.execute(
                "SELECT json_extract(data, '$.operator'), COUNT(*),"
                " SUM(json_extract(data, '$.llm.completion_tokens')) FROM events"
                " WHERE kind IN ('operator_call', 'operator_failed') GROUP BY 1"
            )
            if op is not None
        }
        admissions = dict(self.db.execute(
            "SELECT p.operator, COUNT(*) FROM events e JOIN programs p ON p.id = e.program_id"
            " WHERE e.kind = 'admitted' GROUP BY 1"
        ).fetchall())
        return calls, admissions

    def failure_counts(self) -> dict[str, int]:
        """Failed evaluations and rejected proposals, by reason kind."""
        rows = self.db.execute(
            "SELECT kind, json_extract(data, '$.reason_kind'), COUNT(*) FROM events"
            " WHERE kind IN ('evaluated', 'rejected', 'operator_failed')"
            " AND json_extract(data, '$.reason_kind') IS NOT NULL GROUP BY 1, 2"
        ).fetchall()
        return {f"{reason}": n for _kind, reason, n in rows}

    def events(self, kind: str | None = None) -> list[tuple[int, float, str, str | None, dict | None]]:
        q = "SELECT seq, ts, kind, program_id, data FROM events"
        params: tuple = ()
        if kind is not None:
            q += " WHERE kind = ?"
            params = (kind,)
        rows = self.db.execute(q + " ORDER BY seq", params).fetchall()
        return [(s, t, k, p, json.loads(d) if d else None) for s, t, k, p, d in rows]
