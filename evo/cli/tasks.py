"""`evo tasks`: the tasks evo knows; `evo task new`: a working task folder of one's own."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from evo.cli.app import cli, out


@cli.command()
def tasks() -> None:
    """List the tasks evo knows, with their objective and best published values.

    Tasks are found in the repository's tasks/ and in the folders of $EVO_TASKS_PATH (colon-separated). A task
    whose task.toml is broken is listed with its error; the others are listed as usual."""
    from evo.task import scan_tasks

    table = Table("task", "family", "objective", "metric", "best known")
    broken: list[tuple[str, Exception]] = []
    for name, t in scan_tasks():
        if isinstance(t, Exception):
            broken.append((name, t))
            table.add_row(name, "-", "-", "-", "BROKEN: see below")
            continue
        best = ", ".join(f"{k} {v:g}" for k, v in t.config.best_known.items())
        table.add_row(name, t.config.family or "-", t.config.objective, t.config.metric, best)
    out.print(table)
    for name, error in broken:  # one whole line each, never folded into a table cell
        out.print(f"broken task {name}: {error}", highlight=False, markup=False, soft_wrap=True)


@cli.group()
def task() -> None:
    """Make a task of your own."""


@task.command(name="new")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Folder in which to create the task's folder NAME.")
def task_new(name: str, parent: Path) -> None:
    """Write a working task skeleton in DIR/NAME: task.toml (every key, commented), reference.py, seed.py,
    prompt.md. `evo eval DIR/NAME DIR/NAME/seed.py` accepts it as written; then make it your problem."""
    from evo.task_skeleton import write_skeleton

    folder = write_skeleton(parent, name)
    out.print(f"wrote {folder}/: task.toml, reference.py, seed.py, prompt.md", highlight=False)
    out.print(f"try it:  evo eval {folder} {folder / 'seed.py'}", highlight=False, markup=False)
    out.print(f"search:  evo run {folder} --budget 50 --run-dir runs/{folder.name}", highlight=False, markup=False)
