"""Export a run's programs to files a person can open: JSONL or Parquet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evo.errors import EvoError
from evo.store.sqlite import Store


def _rows(store: Store) -> Iterator[dict[str, Any]]:
    for p in store.iter_programs():
        yield {
            "id": p.id, "seq": p.seq, "status": str(p.status), "operator": p.operator,
            "parents": list(p.parents), "island": p.island, "score": p.score,
            "metrics": p.metrics, "descriptors": list(p.descriptors), "error": p.error,
            "source": p.source, "meta": p.meta,
        }


def export_programs(run_dir: Path, path: Path, fmt: str) -> int:
    """Write every program of the run in `run_dir` to `path`; returns how many."""
    store = Store.in_dir(run_dir, readonly=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "jsonl":
            n = 0
            with open(path, "w") as f:
                for row in _rows(store):
                    f.write(json.dumps(row) + "\n")
                    n += 1
            return n
        if fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as e:
                raise EvoError("Parquet export needs pyarrow: pip install 'evo[parquet]'") from e
            rows = list(_rows(store))
            for r in rows:  # nested values as JSON text: one flat, stable schema
                for key in ("metrics", "source", "meta"):
                    r[key] = json.dumps(r[key])
            pq.write_table(pa.Table.from_pylist(rows), path)
            return len(rows)
        raise EvoError(f"unknown export format {fmt!r}: use jsonl or parquet")
    finally:
        store.close()
