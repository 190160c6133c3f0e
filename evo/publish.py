"""Publishing: a run's best programs into `archive/`, each behind the auditor's strictest level.

Each program goes through the evaluation pipeline again, at level `publish`: screened, run afresh by its
family's backend, scored, and audited with the static checks again (with the publish-only ones, such as
a kernel's provenance) and, for task families with dynamic checks, a fresh result for every one of them
(a stored verdict is not taken on trust). A program is published only when that run succeeds and the
verdict is `pass`. Each published program is a source file beside a JSON record of its provenance: task,
run, lineage, operator, evaluation, verdict, date. `archive/` is then a seed source for new runs.

The programs published are also rows of `archive/<family>-<device>.jsonl` (one JSON object a line: task,
source, the value and metrics measured afresh at publish, the device they were measured on, provenance and
verdict), the file `evo run --seed-from archive/<family>-<device>.jsonl` reads. Publishing a program again
replaces its row.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.audit import Level, Verdict
from evo.errors import EvoError
from evo.eval.pipeline import Pipeline, verdict_of
from evo.program import MAIN_FILE, Program, source_files
from evo.store import DB_NAME, Store
from evo.task import TASK_ROOT_META, load_run_task


@dataclass
class Published:
    """One program offered for publishing. `value` is its task metric (`metric`) as the run measured it,
    in the task's own units; `score` the run's internal, oriented score (negated for a minimised task)."""

    program_id: str
    score: float | None
    path: Path | None  # None: refused
    verdict: Verdict
    error: str | None = None  # why the fresh evaluation failed, where it did
    metric: str = "value"
    value: float | None = None
    archive_file: Path | None = None  # the archive's JSONL that holds its row (None: refused)
    row: dict[str, Any] | None = None  # its row there

    @property
    def why_not(self) -> str:
        """Why it was refused: the failing checks with their reasons, or the evaluation's failure."""
        if self.verdict.reasons:
            return "; ".join(f"{n}: {reason}" for n, reason in self.verdict.reasons)
        return self.error or ""


def _lineage(store: Store, program: Program, metric: str, depth: int = 50) -> list[dict[str, Any]]:
    chain, current = [], program
    for _ in range(depth):
        if not current.parents:
            break
        parent = store.get_program(current.parents[0])
        chain.append({"id": parent.id, "operator": parent.operator, "value": parent.metrics.get(metric),
                      "score": parent.score})
        current = parent
    return chain


def publish_run(run_dir: Path, top: int, archive: Path) -> list[Published]:
    """Evaluate the run's `top` best programs again through the pipeline at level publish (on the task
    family's backend, one at a time), and write those that pass to `archive`."""
    run_dir = Path(run_dir)
    if not (run_dir / DB_NAME).is_file():
        raise EvoError(f"{run_dir} is not an evo run directory (no {DB_NAME})")
    store = Store.in_dir(run_dir, readonly=True)
    try:
        task = load_run_task(str(store.get_meta("config", {}).get("task") or store.get_meta("task")),
                             store.get_meta(TASK_ROOT_META))
        with Pipeline(task, level=Level.PUBLISH) as pipeline:
            results = [_publish_one(store, task, program, pipeline, run_dir, Path(archive))
                       for program in store.best_programs(top)]
    finally:
        store.close()
    rows: dict[Path, list[dict[str, Any]]] = {}
    for r in results:
        if r.archive_file is not None and r.row is not None:
            rows.setdefault(r.archive_file, []).append(r.row)
    for path, new in rows.items():
        write_rows(path, new)
    return results


def device_slug(name: str | None) -> str:
    """A short file-name-safe device name: h100, h200, a100, b200, ... for a GPU's name; cpu without one."""
    if not name or name.lower() == "cpu":
        return "cpu"
    m = re.search(r"\b([a-z]{1,2}\d{2,3}[a-z]?)\b", name.lower().replace("nvidia", ""))
    return m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Merge `rows` into the JSONL archive at `path` (a row of the same task and program is replaced), sorted by
    task then best value first; written whole, then renamed, so a reader never sees half a file."""
    key = lambda r: (r.get("task"), r.get("program_id"))  # noqa: E731
    new_keys = {key(r) for r in rows}
    kept = []
    if path.is_file():
        kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    merged = [r for r in kept if key(r) not in new_keys] + rows
    merged.sort(key=lambda r: (str(r.get("task")), -(r.get("score") or 0.0)))
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in merged))
    os.replace(tmp, path)


def _publish_one(store: Store, task: Any, program: Program, pipeline: Pipeline, run_dir: Path,
                 archive: Path) -> Published:
    """One program: evaluated afresh at level publish; written with its record where it passes."""
    result = pipeline.evaluate_sync(Program(source=program.source, id=program.id))
    verdict = verdict_of(result)
    assert verdict is not None  # the pipeline sets one on every result
    metric = task.config.metric
    value = program.metrics.get(metric)
    if not (result.ok and verdict.passed):
        return Published(program.id, program.score, None, verdict, None if result.ok else
                         f"the fresh evaluation failed ({result.failure}): {result.error}", metric, value)
    family = task.config.family or "tasks"
    folder = archive / family / Path(task.name).name  # a task given by path is named after its parent folder
    folder.mkdir(parents=True, exist_ok=True)
    files = source_files(program.source)
    if len(files) == 1:
        path = folder / f"{program.id[:16]}.py"
        path.write_text(next(iter(files.values())))
    else:
        path = folder / program.id[:16]
        for rel, text in files.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_text(text)
    # `value` is the task's own number (lower is better for a minimised task); `score` the run's internal,
    # oriented one (higher is better, the negated value there), kept for ranking across tasks.
    record = {
        "task": task.name, "program_id": program.id, "metric": metric, "objective": task.config.objective,
        "value": value, "score": program.score, "metrics": program.metrics,
        "publish_metrics": result.metrics, "operator": program.operator, "parents": list(program.parents),
        "lineage": _lineage(store, program, metric), "run_dir": str(run_dir.resolve()),
        "run_config": store.get_meta("config"),
        "verdict": verdict.to_dict(), "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / f"{program.id[:16]}.json").write_text(json.dumps(record, indent=1, default=str))
    # The archive's row: the value measured afresh here, on this device, is the one a seeded run starts at.
    device_name = str((result.report or {}).get("device") or "cpu")
    origin = store.provenance([program.id]).get(program.id)
    provenance = {"run_dir": str(run_dir.resolve()), "operator": program.operator, "parents": list(program.parents),
                  "lineage": record["lineage"], "run_value": value}
    if origin:
        provenance["seed_origin"] = origin
    row = {"task": task.name, "family": family, "device": device_slug(device_name), "device_name": device_name,
           "program_id": program.id, "metric": metric, "objective": task.config.objective,
           "value": result.metrics.get(metric), "score": result.score, "metrics": result.metrics,
           "source": files.get(MAIN_FILE), "files": {k: v for k, v in files.items() if k != MAIN_FILE},
           "provenance": provenance, "licence": (origin or {}).get("licence"), "verdict": verdict.to_dict(),
           "published": record["published"]}
    published = Published(program.id, program.score, path, verdict, None, metric, value)
    published.archive_file = archive / f"{family}-{row['device']}.jsonl"
    published.row = row
    return published
