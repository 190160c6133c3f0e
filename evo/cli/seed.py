"""`evo seed RUN_DIR --from SOURCE`: more seeds for a stopped run, evaluated first by its next `evo resume`."""

from __future__ import annotations

from pathlib import Path

import click

from evo.cli.app import cli, out


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--from", "sources", multiple=True, required=True, help="A seed source (repeatable): a file, a "
              "folder (FOLDER:GLOB), a git repository at a commit (REPO@REV:GLOB), a JSONL/Parquet export, a run "
              "directory (its elites) or a published archive (archive/<family>-<device>.jsonl).")
@click.option("--licence", help="The seeds' licence (SPDX id), when the source does not say (a LICENSE file or "
              "an archive row does).")
def seed(run_dir: Path, sources: tuple[str, ...], licence: str | None) -> None:
    """Add seeds to the run in RUN_DIR, with their provenance (source, commit, path, licence).

    Each seed is screened like any child (it must parse; near-duplicates of the run's programs are dropped)
    and queued: the next `evo resume RUN_DIR` evaluates it first, through the pipeline (screen, evaluation,
    audit), within the run's budget."""
    from evo.run_dir import seed_run

    report = seed_run(run_dir, list(sources), licence)
    out.print(f"queued {len(report.queued)} seeds, dropped {len(report.dropped)}", highlight=False)
    for p in report.dropped:
        prov = p.meta.get("provenance") or {}
        where = prov.get("path") or prov.get("program_id") or "?"  # type: ignore[union-attr]
        out.print(f"  dropped {where}: {p.meta.get('reason_kind')} ({p.error})", highlight=False, markup=False)
    if report.queued:
        if report.budget_left < len(report.queued):
            out.print(f"the budget has room for {report.budget_left} of them: `evo resume {run_dir} --budget N` "
                      "with a larger N evaluates them all", highlight=False, markup=False)
        else:
            out.print(f"`evo resume {run_dir}` evaluates them first", highlight=False, markup=False)
