"""Seeds from tables and runs: an `evo export` (JSONL, Parquet), a published archive, a run's elites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evo.errors import EvoError
from evo.seeding.sources import Seed, SourceSpec, source_of_row
from evo.store import Store
from evo.task import Task, load_task

_ORIGIN_KEYS = ("program_id", "task", "metric", "value", "device", "published", "run_dir")


def _rows(path: Path, where: str) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow's errors are many types; the message is what counts
            raise EvoError(f"seed source {where!r}: cannot read {path} as Parquet ({e})") from None
    rows = []
    try:
        with path.open() as f:
            lines = list(enumerate(f, 1))
    except (OSError, UnicodeDecodeError) as e:
        raise EvoError(f"seed source {where!r}: cannot read {path} ({getattr(e, 'strerror', None) or e})") from e
    for n, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            row = e
        if not isinstance(row, dict):
            raise EvoError(f"seed source {where!r}: line {n} of {path} is not a JSON object; a seed table is one "
                           "JSON object a line, as `evo export` and `evo publish` write")
        rows.append(row)
    return rows


def _same_task(named: str, task: Task) -> bool:
    """A row's task names this one: the same name, or the same folder name (a task loaded by path is
    named `<parent>/<folder>`)."""
    return named == task.name or Path(named).name == Path(task.name).name


def _check_export_task(rows: list[dict[str, Any]], spec: SourceSpec, task: Task) -> None:
    """An export names no task, but its rows carry their task's metrics (`metric_<name>`): refuse one whose
    metrics do not include this task's, the export of another task."""
    metrics = {k.removeprefix("metric_") for r in rows for k in r if k.startswith("metric_")}
    if metrics and task.config.metric not in metrics:
        raise EvoError(f"seed source {spec.text!r} is an export of another task: its rows' metrics are "
                       f"{', '.join(sorted(metrics))}, and {task.name} is scored by {task.config.metric!r}; "
                       "seed a run of that task, or export a run of this one")


def table_rows(spec: SourceSpec, task: Task) -> list[Seed]:
    """The valid programs of an export, or this task's rows of a published archive (rows that name a task)."""
    rows = _rows(spec.path, spec.text)
    kind = "archive" if any("task" in r for r in rows) else "export"
    if kind == "export":
        _check_export_task(rows, spec, task)
    seeds, other_tasks = [], set()
    for row in rows:
        if kind == "archive" and not _same_task(str(row.get("task")), task):
            other_tasks.add(str(row.get("task")))
            continue
        if row.get("status") not in (None, "evaluated"):
            continue  # an export's failed, rejected or never evaluated programs
        source = source_of_row(row)
        if source is None:
            continue
        prov: dict[str, Any] = {"kind": kind, "path": str(spec.path.resolve())}
        prov["program_id"] = row.get("program_id") or row.get("id")
        prov.update({k: row[k] for k in _ORIGIN_KEYS if k in row and k != "program_id"})
        origin = row.get("provenance")
        origin = origin if isinstance(origin, dict) else {}
        if origin:  # where the published program itself came from
            prov["origin"] = origin
        first = origin.get("seed_origin") if isinstance(origin.get("seed_origin"), dict) else {}
        for key in ("licence", "author"):  # the row's own word first, then its run's, then its first seed's
            found = row.get(key) or origin.get(key) or first.get(key)
            if found:
                prov[key] = found
        seeds.append(Seed(source, prov))
    if not seeds and other_tasks:
        raise EvoError(f"seed source {spec.text!r} holds no program of task {task.name}, only of "
                       f"{', '.join(sorted(other_tasks))}: seed a run of one of those, or publish this task's")
    return seeds


def run_elites(spec: SourceSpec, task: Task) -> list[Seed]:
    """The elites of another run of the same task: its archive rebuilt from its store, best first."""
    from evo.config import RunConfig
    from evo.replay import rebuild_population

    if spec.glob:
        raise EvoError(f"seed source {spec.text!r}: a run directory takes no glob (its elites are the seeds)")
    store = Store.in_dir(spec.path, readonly=True)
    try:
        raw = store.get_meta("config")
        if raw is None:
            raise EvoError(f"seed source {spec.text!r}: {spec.path} has no run config (its creation was interrupted)")
        config = RunConfig.from_dict(raw, str(spec.path))
        other = load_task(config.task)
        if other.root != task.root and not _same_task(other.name, task):
            raise EvoError(f"seed source {spec.text!r} is a run of {other.name}, not {task.name}: seed from a run "
                           "of the same task")
        population = rebuild_population(store, other, config)
        scored: dict[str, float] = {}
        for cells in population.islands:
            for pid, score in cells.top(cells.num_elites):
                scored[pid] = max(score, scored.get(pid, score))
        seeds = []
        for pid in sorted(scored, key=lambda i: -scored[i]):
            p = store.get_program(pid)
            seeds.append(Seed(p.source, {"kind": "run", "path": str(spec.path.resolve()), "program_id": pid,
                                         "task": other.name, "metric": other.config.metric,
                                         "value": p.metrics.get(other.config.metric)}))
        return seeds
    finally:
        store.close()
