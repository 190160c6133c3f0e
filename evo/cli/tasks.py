"""`evo tasks`: the tasks evo knows."""

from __future__ import annotations

from rich.table import Table

from evo.cli.app import cli, out


@cli.command()
def tasks() -> None:
    """List the tasks evo knows, with their objective and best published values."""
    from evo.task import list_tasks, load_task

    table = Table("task", "family", "objective", "metric", "best known")
    for name in list_tasks():
        t = load_task(name)
        best = ", ".join(f"{k} {v:g}" for k, v in t.config.best_known.items())
        table.add_row(name, t.config.family or "-", t.config.objective, t.config.metric, best)
    out.print(table)
