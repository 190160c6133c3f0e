"""A run's programs as one typed table: what `evo export` writes and a notebook reads.

One row per program, in proposal order. Values are the task's own: `value` is the task's metric as
the task reports it (for a minimised task the lower the better; the engine's internal score, negated
for such tasks, is not exported), `metric_<name>` one float column per metric, `descriptor_<name>`
one float column per behaviour descriptor (`descriptor_embedding_<i>` for embedding cells).

The other columns: `id`, `seq` (proposal order), `eval_order` (1-based order of the committed
evaluation; empty if never evaluated), `status`, `island`, `operator`, `model`, `prompt_tokens` and
`completion_tokens` (of the LLM call that wrote the program; a call asked for several children gives
each of them its numbers), `parents`, `proposed_at`, `evaluated_at` (UTC), `eval_seconds`, `cell`
(the MAP-Elites cell it competed for), `admitted` and `admission` (`new`, `improve`, `rejected`),
`verdict` (`pass` / `fail`), `verdict_level`, `reasons` (`check: reason`, one per failed check),
`failure` (kind) and `error` (text), `novelty`, `source` (the main file's text) and `files` (the
other files of a multi-file program). The Parquet file's metadata names the task, its metric and
objective.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from evo.config import RunConfig
from evo.errors import EvoError
from evo.population import EmbeddingCellSpace, Population
from evo.program import MAIN_FILE, Status, source_files
from evo.replay import rebuild_population
from evo.store import Store
from evo.store.export import Column, ProgramRecord, Value, iter_records, metric_names, write_table
from evo.task import TASK_ROOT_META, Task, load_run_task

FIXED_HEAD = [
    Column("id", "string"), Column("seq", "int"), Column("eval_order", "int"), Column("status", "string"),
    Column("island", "int"), Column("operator", "string"), Column("model", "string"),
    Column("prompt_tokens", "int"), Column("completion_tokens", "int"), Column("parents", "strings"),
    Column("proposed_at", "timestamp"), Column("evaluated_at", "timestamp"), Column("eval_seconds", "float"),
    Column("value", "float"),
]
FIXED_TAIL = [
    Column("cell", "int"), Column("admitted", "bool"), Column("admission", "string"), Column("verdict", "string"),
    Column("verdict_level", "string"), Column("reasons", "strings"), Column("failure", "string"),
    Column("error", "string"), Column("novelty", "float"), Column("source", "string"), Column("files", "files"),
]


def descriptor_names(task: Task, config: RunConfig, store: Store) -> list[str]:
    """The behaviour descriptors' names in the order programs store them."""
    if config.cells == "embedding":
        raw = store.get_meta("cell_space")
        # the fitted space may have fewer axes than asked for (few distinct seeds)
        dims = EmbeddingCellSpace.from_dict(raw).n_dims if raw else config.embedding_dims
        return [f"embedding_{i}" for i in range(dims)]
    return [d.name for d in task.config.descriptors]


def _verdict(text: str | None) -> tuple[str | None, str | None, list[str]]:
    """(status, level, ["check: reason", ...]) of a stored verdict (JSON of `Verdict.to_dict`)."""
    if not text:
        return None, None, []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text, None, []  # an old or foreign verdict: kept as it was written
    if not isinstance(data, dict):
        return str(data), None, []
    reasons = [f"{r.get('check')}: {r.get('reason')}" for r in data.get("reasons", []) if isinstance(r, dict)]
    status, level = data.get("status"), data.get("level")
    return (None if status is None else str(status)), (None if level is None else str(level)), reasons


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cell(rec: ProgramRecord, population: Population) -> int | None:
    """The cell the program competed for: where it was admitted, else where its descriptors fall."""
    if rec.admitted_cell is not None:
        return rec.admitted_cell
    p = rec.program
    if p.status != Status.EVALUATED or p.score is None:
        return None
    try:
        return population.decide(p.id, p.island, p.score, p.descriptors).cell
    except ValueError:  # descriptors that no longer fit the cells (a foreign import): no cell
        return None


def _row(rec: ProgramRecord, metric: str, metrics: list[str], descriptors: list[str],
         population: Population) -> dict[str, Value]:
    p = rec.program
    llm = p.meta.get("llm")
    llm = llm if isinstance(llm, dict) else {}
    status, level, reasons = _verdict(p.verdict)
    files = source_files(p.source)
    main = files.pop(MAIN_FILE, "")
    novelty = p.meta.get("novelty")
    row: dict[str, Value] = {
        "id": p.id, "seq": p.seq, "eval_order": rec.eval_order, "status": str(p.status), "island": p.island,
        "operator": p.operator, "model": None if llm.get("model") is None else str(llm["model"]),
        "prompt_tokens": _int(llm.get("prompt_tokens")), "completion_tokens": _int(llm.get("completion_tokens")),
        "parents": list(p.parents), "proposed_at": rec.proposed_at, "evaluated_at": rec.evaluated_at,
        "eval_seconds": rec.wall_s, "value": _float(p.metrics.get(metric)),
        "cell": _cell(rec, population), "admitted": rec.admission in ("new", "improve"),
        "admission": rec.admission, "verdict": status, "verdict_level": level, "reasons": reasons,
        "failure": rec.failure, "error": p.error,
        "novelty": float(novelty) if isinstance(novelty, int | float) else None,
        "source": main, "files": files or None,
    }
    for name in metrics:
        row[f"metric_{name}"] = _float(p.metrics.get(name))
    for i, name in enumerate(descriptors):
        row[f"descriptor_{name}"] = float(p.descriptors[i]) if i < len(p.descriptors) else None
    return row


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def export_programs(run_dir: Path, path: Path, fmt: str) -> int:
    """Write every program of the run in `run_dir` to `path` as `fmt` (jsonl or parquet), with the
    columns of this module's docstring; returns how many programs."""
    store = Store.in_dir(Path(run_dir), readonly=True)
    try:
        raw = store.get_meta("config")
        if raw is None:
            raise EvoError(f"{run_dir} has no run config: was it created by `evo run`?")
        config = RunConfig.from_dict(raw)
        task = load_run_task(config.task, store.get_meta(TASK_ROOT_META))
        metric = task.config.metric
        metrics = [metric] + [m for m in metric_names(store) if m != metric]
        descriptors = descriptor_names(task, config, store)
        columns = (FIXED_HEAD + [Column(f"metric_{m}", "float") for m in metrics]
                   + [Column(f"descriptor_{d}", "float") for d in descriptors] + FIXED_TAIL)
        population = rebuild_population(store, task, config)

        def rows() -> Iterator[dict[str, Value]]:
            for rec in iter_records(store):
                yield _row(rec, metric, metrics, descriptors, population)

        metadata = {"evo.task": task.name, "evo.metric": metric, "evo.objective": task.config.objective}
        return write_table(path, fmt, columns, rows(), metadata)
    finally:
        store.close()
