"""Reading a run out for files a person can open: typed records from the store, and the writers.

`iter_records` joins what a program's row holds with what its events add (when it was evaluated,
in which order, how long it took, where it was admitted, why it failed), in proposal order.
`write_table` writes rows of declared `Column`s as JSONL or Parquet; in Parquet every column has
its own type (floats, integers, timestamps, lists), so that a notebook reads numbers, not JSON text.
What the columns are (one per metric and descriptor, the task's own values) is decided by
`evo.report.programs`, which knows the task; this module only speaks to the store.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from evo.errors import EvoError
from evo.program import Program
from evo.store.sqlite import Store

ColumnType = Literal["string", "int", "float", "bool", "timestamp", "strings", "files"]
"""`strings`: a list of strings; `files`: `{relative path: text}`; `timestamp`: seconds since the epoch
in, UTC timestamps out (ISO 8601 text in JSONL)."""

Value = str | int | float | bool | list[str] | dict[str, str] | None


@dataclass(frozen=True)
class Column:
    """One exported column: its name and its type (nullable, like every column)."""

    name: str
    type: ColumnType


@dataclass
class ProgramRecord:
    """A program with what the run's events say about it.

    `eval_order` is the 1-based order in which its evaluation was committed (None: never
    evaluated); `admission` the population's decision on it (`new`, `improve`, `rejected`);
    `admitted_cell` the cell it entered when admitted; `failure` the kind of its failure or
    rejection (`timeout`, `near_duplicate`, ...).
    """

    program: Program
    proposed_at: float
    eval_order: int | None
    evaluated_at: float | None
    wall_s: float | None
    admission: str | None
    admitted_cell: int | None
    failure: str | None


def iter_records(store: Store) -> Iterator[ProgramRecord]:
    """Every program of the run in proposal order, with its evaluation and admission events."""
    db = store.db
    created = dict(db.execute("SELECT id, created FROM programs").fetchall())
    order = {pid: n for n, pid in db.execute("SELECT n, program_id FROM evaluations")}
    evaluated: dict[str, tuple[float, dict[str, object]]] = {}
    rejected: dict[str, str] = {}
    cells: dict[str, int] = {}
    rows = db.execute("SELECT kind, program_id, ts, data FROM events"
                      " WHERE kind IN ('evaluated', 'admitted', 'rejected') AND program_id IS NOT NULL ORDER BY seq")
    for kind, pid, ts, text in rows:
        data = json.loads(text) if text else {}
        if kind == "evaluated":
            evaluated.setdefault(pid, (ts, data))  # the first evaluation is the one counted
        elif kind == "admitted" and pid not in cells and isinstance(data.get("cell"), int):
            cells[pid] = data["cell"]
        elif kind == "rejected":
            rejected[pid] = str(data.get("reason_kind") or "rejected")
    for program in store.iter_programs():
        pid = program.id
        ts, data = evaluated.get(pid, (None, {}))
        wall = data.get("wall_s")
        admission = data.get("admission")
        failure = data.get("reason_kind") if ts is not None else rejected.get(pid)
        yield ProgramRecord(
            program=program,
            proposed_at=float(created[pid]),
            eval_order=order.get(pid),
            evaluated_at=ts,
            wall_s=float(wall) if isinstance(wall, int | float) else None,
            admission=str(admission) if admission is not None else None,
            admitted_cell=cells.get(pid),
            failure=None if failure is None else str(failure),
        )


def metric_names(store: Store) -> list[str]:
    """Every metric name that any evaluated program of the run has, sorted."""
    rows = store.db.execute("SELECT DISTINCT j.key FROM programs, json_each(programs.metrics) AS j"
                            " WHERE programs.metrics IS NOT NULL ORDER BY 1")
    return [str(r[0]) for r in rows]


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat()


def _open_for_writing(path: Path) -> IO[bytes]:
    """The output file, opened; an EvoError naming the path and the fix when it cannot be."""
    if path.is_dir():
        raise EvoError(f"cannot write {path}: it is a directory; give a file name such as {path / 'programs.jsonl'}")
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise EvoError(f"cannot write {path}: {path.parent} {what}; create the folder or choose another --out")
    try:
        return open(path, "wb")
    except OSError as e:
        raise EvoError(f"cannot write {path}: {e.strerror}; choose another --out") from e


def write_table(path: Path, fmt: str, columns: list[Column], rows: Iterable[Mapping[str, Value]],
                metadata: Mapping[str, str] | None = None) -> int:
    """Write `rows` (mappings from column name to value) to `path` as `fmt` ("jsonl" or "parquet");
    returns how many rows. In Parquet the columns get their declared types and `metadata` goes
    into the file's schema metadata; in JSONL a timestamp is ISO 8601 text."""
    path = Path(path)
    if fmt not in ("jsonl", "parquet"):
        raise EvoError(f"unknown export format {fmt!r}: use jsonl or parquet")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401  # checked before the file is made
        except ImportError as e:
            raise EvoError("Parquet export needs pyarrow: pip install 'evo[parquet]'") from e
    with _open_for_writing(path) as f:
        if fmt == "jsonl":
            return _write_jsonl(f, columns, rows)
        return _write_parquet(f, columns, rows, metadata or {})


def _write_jsonl(f: IO[bytes], columns: list[Column], rows: Iterable[Mapping[str, Value]]) -> int:
    stamps = [c.name for c in columns if c.type == "timestamp"]
    n = 0
    for row in rows:
        out = {c.name: row.get(c.name) for c in columns}
        for name in stamps:
            value = out[name]
            if isinstance(value, int | float):
                out[name] = _iso(value)
        f.write(json.dumps(out).encode() + b"\n")
        n += 1
    return n


def _write_parquet(f: IO[bytes], columns: list[Column], rows: Iterable[Mapping[str, Value]],
                   metadata: Mapping[str, str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"), "strings": pa.list_(pa.string()),
        "files": pa.map_(pa.string(), pa.string()),
    }
    # Told to pandas (which reads this key) that the integer and bool columns are its nullable ones: otherwise
    # `pandas.read_parquet` makes an int column with a missing value float64 (a token count of 3.0).
    nullable = {"int": ("int64", "Int64"), "bool": ("bool", "boolean")}
    pandas_meta = {"index_columns": [], "column_indexes": [], "columns": [
        {"name": c.name, "field_name": c.name, "pandas_type": nullable[c.type][0], "numpy_type": nullable[c.type][1],
         "metadata": None} for c in columns if c.type in nullable]}
    schema = pa.schema([pa.field(c.name, types[c.type]) for c in columns],
                       metadata={**metadata, "pandas": json.dumps(pandas_meta)})
    stamps = [c.name for c in columns if c.type == "timestamp"]
    n = 0
    with pq.ParquetWriter(f, schema) as writer:
        batch: list[dict[str, Value | dt.datetime]] = []
        for row in rows:
            out: dict[str, Value | dt.datetime] = {c.name: row.get(c.name) for c in columns}
            for name in stamps:
                value = out[name]
                if isinstance(value, int | float):
                    out[name] = dt.datetime.fromtimestamp(value, tz=dt.UTC)
            batch.append(out)
            if len(batch) == 5000:  # bounded memory at a million programs
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
                batch = []
        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        n += len(batch)
    return n
