"""`evo show`, `evo export`, `evo publish`: what a run found."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from evo.cli.app import cli, out


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="How many best programs to list.")
@click.option("--source", "show_source", is_flag=True, help="Print the best program's source.")
@click.option("--lessons", "whole_lessons", is_flag=True, help="Print the newest lesson whole (the summary cuts it "
              "to about 1,500 characters).")
def show(run_dir: Path, top: int, show_source: bool, whole_lessons: bool) -> None:
    """Best programs and the archive of the run in RUN_DIR; for a suite (`evo run --suite`), its tasks side by
    side with how much of their progress came through transfer."""
    from evo.report.summary import run_summary
    from evo.report.transfer import suite_table, transfer_note
    from evo.store import Store
    from evo.suite import suite_meta
    from evo.suite.layout import MEMBERS

    if suite_meta(run_dir) is not None:
        table, totals = suite_table(run_dir)
        out.print(table)
        out.print(totals, highlight=False)
        members = sorted(p.name for p in (run_dir / MEMBERS).iterdir() if p.is_dir()) if (run_dir / MEMBERS).is_dir() else []
        example = members[0] if members else "<family>__<name>"
        out.print(f"each task: `evo show {run_dir / MEMBERS / example}` (the folders of {run_dir / MEMBERS}: a task's "
                  "name with / as __)", highlight=False, markup=False, soft_wrap=True)
        return
    summary = run_summary(run_dir, top=top, lesson_chars=None if whole_lessons else 1500)
    out.print(summary.header, highlight=False)
    out.print(summary.best_table)
    out.print(summary.archive_table)
    out.print(summary.qd_note, highlight=False)
    if summary.seeds_table is not None:
        out.print(summary.seeds_table)
    if summary.lessons:
        out.print(summary.lessons, markup=False, highlight=False)
    store = Store.in_dir(run_dir, readonly=True)
    try:
        if note := transfer_note(store):
            out.print(note, markup=False, highlight=False)
    finally:
        store.close()
    if show_source and summary.best_source is not None:
        out.print(summary.best_source, markup=False, highlight=False)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Output file (default RUN_DIR/programs.<fmt>).")
def export(run_dir: Path, fmt: str, out_path: Path | None) -> None:
    """Write every program of the run to JSONL or Parquet, one typed column each: the task's own value and
    one column per metric and descriptor, source, lineage, evaluation order and times, cell, admission,
    verdict and reasons, operator, model and tokens (evo/report/programs.py lists them)."""
    from evo.report.programs import export_programs

    path = out_path or Path(run_dir) / f"programs.{fmt}"
    n = export_programs(run_dir, path, fmt)
    out.print(f"wrote {n} programs to {path}", highlight=False)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="How many of the run's best programs to consider.")
@click.option("--archive", "archive_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("archive"),
              show_default=True, help="Folder to publish into: the rows to ARCHIVE/<family>-<device>.jsonl (what --seed-from reads), "
              "each program's file and JSON record to ARCHIVE/<family>/<task>/.")
def publish(run_dir: Path, top: int, archive_dir: Path) -> None:
    """Publish a run's best programs to the archive, each only with a `publish` verdict of pass.

    Each program is evaluated afresh through the pipeline at the publish level: the static checks with the
    stricter ones added (a kernel must launch a Triton kernel), and a fresh result for every dynamic check
    of the task's family. Each published program is written with a JSON record of its provenance (task,
    run, lineage, verdict).
    """
    from evo.publish import publish_run

    results = publish_run(run_dir, top, archive_dir)
    metric = results[0].metric if results else "value"
    table = Table("id", metric, "verdict", "written to / why not")
    for r in results:  # the task's own value (not the internal score, negated for a minimised task)
        why = str(r.path) if r.path else r.why_not[:150]
        table.add_row(r.program_id[:12], "-" if r.value is None else f"{r.value:.10g}", r.verdict.status, why)
    out.print(table)
    for archive_file in sorted({r.archive_file for r in results if r.archive_file is not None}):
        out.print(f"archive rows: {archive_file}  (`evo run TASK --seed-from {archive_file}` starts from them)",
                  highlight=False, markup=False)
    if results and not any(r.path for r in results):
        sys.exit(1)
