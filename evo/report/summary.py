"""What `evo show` prints: the run's state, its best programs and its archive.

Every number is in the task's own units: the metric as the task reports it (for a minimised task the
lowest is best), never the engine's oriented score (which negates it there). The QD-score is the sum
over elites of how much better each is than the offset (see `Cells.qd_score`), shown with that offset
in the task's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from evo.errors import EvoError
from evo.store import Store
from evo.task import TASK_ROOT_META, load_run_task


@dataclass
class RunSummary:
    """What `evo show` prints, and the numbers behind it (`best_value` and `qd_offset` in the task's units)."""

    header: str
    best_table: Table
    archive_table: Table
    best_source: str | None
    evaluations: int
    best_value: float | None
    coverage: float
    qd_score: float = 0.0
    qd_offset: float = 0.0
    qd_note: str = ""  # one line under the archive table: what the QD-score is measured from
    seeds_table: Table | None = None  # seeds from outside the run (evo/seeding/), with their provenance
    lessons: str = ""  # the run's newest lesson (evo/lessons.py) with its version and source; "" if none


def run_summary(run_dir: Path, top: int = 5, lesson_chars: int | None = 1500) -> RunSummary:
    """Read the run in `run_dir` (rebuilding its archive from the store) and summarise it; its newest lesson
    cut to about `lesson_chars` (None: whole)."""
    from evo.config import RunConfig
    from evo.replay import rebuild_population

    store = Store.in_dir(run_dir, readonly=True)
    try:
        raw = store.get_meta("config")
        if raw is None:
            raise EvoError(f"{run_dir} has no run config: was it created by `evo run`?")
        config = RunConfig.from_dict(raw)
        task = load_run_task(config.task, store.get_meta(TASK_ROOT_META))
        done = store.count_evaluations()
        counts = store.event_counts()
        population = rebuild_population(store, task, config)
        best = store.best_programs(limit=top)
        metric = task.config.metric
        header = (f"run {run_dir}: task {task.name} ({task.config.objective} {metric}), "
                  f"{done}/{config.budget} evaluations, "
                  f"{counts.get('proposed', 0)} proposals accepted, {counts.get('rejected', 0)} rejected, "
                  f"{counts.get('operator_failed', 0)} operator failures")
        best_table = Table(title="best programs", title_justify="left")
        for col in ("rank", "id", metric, "operator", "island", "parents"):
            best_table.add_column(col)
        for i, p in enumerate(best, 1):
            value = p.metrics.get(metric)
            best_table.add_row(str(i), p.id[:12], "-" if value is None else f"{value:.10g}", p.operator,
                               str(p.island), ",".join(x[:8] for x in p.parents))
        offset = population.qd_offset  # oriented, like the scores it is subtracted from
        shown_offset = task.orient(offset)  # orient is its own inverse: back to the task's units
        how = ("qd_offset of the run config" if config.qd_offset is not None else
               "the worst value seen; set qd_offset in the run config for a fixed bound")
        note = f"QD-score: the sum over elites of how much each beats {metric} = {shown_offset:.10g} ({how})"
        archive = Table(title=f"archive ({config.cells} cells)", title_justify="left")
        for col in ("island", "elites", "coverage", "QD-score", f"best {metric}"):
            archive.add_column(col)
        for i, cells in enumerate(population.islands):
            b = cells.best()
            archive.add_row(str(i), str(cells.num_elites), f"{cells.coverage:.1%}",
                            f"{cells.qd_score_at(offset):.4g}", "-" if b is None else f"{task.orient(b[1]):.10g}")
        best_value = best[0].metrics.get(metric) if best else None
        if config.ablation != "none":
            header += f"; ablation {config.ablation}"
        return RunSummary(header, best_table, archive, best[0].text if best else None, done, best_value,
                          population.coverage, population.qd_score, shown_offset, note,
                          _seeds_table(store, metric), _lessons(store, lesson_chars))
    finally:
        store.close()


def _lessons(store: Store, chars: int | None = 1500) -> str:
    """The newest lesson (cut to about `chars` at a line or word end; None: whole), headed by its version,
    evaluation count and source."""
    from evo.store.lessons import lessons

    found = lessons(store)
    if not found:
        return ""
    own = [x for x in found if x.carried_from is None] or found
    x = own[-1]
    carried = f", carried from {x.carried_from}" if x.carried_from else ""
    text = x.text
    if chars is not None and len(text) > chars:
        cut = max(text.rfind("\n", 0, chars), text.rfind(" ", 0, chars))
        shown = text[:cut if cut > chars // 2 else chars].rstrip()  # a word's end, unless it is one long word
        text = f"{shown}\n... ({len(text) - len(shown)} more characters: evo show RUN_DIR --lessons)"
    return (f"lessons: version {x.version} of {len(own)}, after {x.evaluations} evaluations, {x.source}{carried}"
            f"\n{text}")


def _seeds_table(store: Store, metric: str, limit: int = 50) -> Table | None:
    """The seeds that came from outside the run, with where from: source, commit, path, licence."""
    provenance = store.provenance()
    if not provenance:
        return None
    table = Table(title=f"seeds from outside the run ({len(provenance)})", title_justify="left")
    for col in ("id", "status", metric, "source", "commit", "path", "licence"):
        table.add_column(col)
    for pid, prov in list(provenance.items())[:limit]:
        p = store.get_program(pid)
        value = p.metrics.get(metric)
        status = f"dropped: {p.meta.get('reason_kind')}" if p.status == "rejected" else str(p.status)
        table.add_row(pid[:12], status, "-" if value is None else f"{value:.10g}", str(prov.get("source", "")),
                      str(prov.get("commit") or "")[:12], str(prov.get("path") or prov.get("program_id") or ""),
                      str(prov.get("licence") or "-"))
    return table
