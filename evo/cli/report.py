"""`evo report`: a run as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from evo.cli.app import cli, out


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Output file (default RUN_DIR/report.html).")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="How many best programs to show with their code.")
def report(run_dir: Path, out_path: Path | None, top: int) -> None:
    """Write an HTML report of the run in RUN_DIR: progress, archive heatmap, embedding map, the best
    program's lineage and diffs, admissions per operator and model, failures, the best programs' code.
    One file, plots inline: it opens anywhere, offline. Safe on a run that is still going."""
    from evo.report.html import write_report

    path = write_report(run_dir, out_path, top=top)
    out.print(f"wrote {path}", highlight=False)
