"""`evo tasks`: the tasks evo knows; `evo task new`: a working task folder of one's own."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from evo.cli.app import cli, out, show_logs


@cli.group(invoke_without_command=True)
@click.pass_context
def tasks(ctx: click.Context) -> None:
    """List the tasks evo knows, with their objective and best published values.

    Tasks are found in the repository's tasks/ and in the folders of $EVO_TASKS_PATH (colon-separated). A task
    whose task.toml or reference.py is broken is listed with its error; the others are listed as usual.
    `evo tasks import kernelbench|solexecbench PATH` makes tasks of a benchmark's problems."""
    if ctx.invoked_subcommand is not None:
        return
    from evo.audit.gate import task_policy
    from evo.errors import EvoError
    from evo.eval.families import family_of
    from evo.task import scan_tasks

    table = Table("task", "family", "objective", "metric", "best known")
    broken: list[tuple[str, Exception]] = []
    for name, t in scan_tasks():
        if not isinstance(t, Exception):
            try:  # what `evo eval` and `evo run` would refuse: the family, its reference.py, the [audit] table
                family_of(t)
                task_policy(t)
            except EvoError as e:
                t = e
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


@tasks.group(name="import")
def tasks_import() -> None:
    """Make evo kernel tasks of public benchmarks' problems (hidden workloads and calibrated tolerances added)."""


_OUT = click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("tasks/imported"),
                    show_default=True, help="Folder to write the task folders in; outside the repository, use "
                    "them by name with EVO_TASKS_PATH=OUT, or by path.")
_FORCE = click.option("--force", is_flag=True, help="Replace a task folder that exists.")


def _interpret_without_gpu() -> None:
    """The import checks the seed against the reference on CPU: Triton's interpreter where there is no GPU (set
    before any Triton kernel is defined)."""
    import os

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _report(folders: list[Path]) -> None:
    for folder in folders:  # what the importer wrote, read from the folder rather than a list kept here
        names = ", ".join(sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")))
        out.print(f"wrote {folder}/: {names}", highlight=False)
    if folders:
        first = folders[0]
        out.print(f"try it:  EVO_TASKS_PATH={first.parent} evo eval {first.name} {first / 'seed.py'}",
                  highlight=False, markup=False)


@tasks_import.command(name="kernelbench")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@_OUT
@_FORCE
def import_kernelbench_cmd(path: Path, out_dir: Path, force: bool) -> None:
    """Import a KernelBench problem file (class Model, get_inputs, get_init_inputs), or every .py of a folder.

    FLOPs are counted with torch's FlopCounterMode on the reference; minimum bytes are the inputs', weights' and
    outputs' sizes. The seed is the problem's own PyTorch code behind evo's interface."""
    _interpret_without_gpu()
    show_logs()
    from evo.tasks_import import import_kernelbench

    _report(import_kernelbench(path, out_dir, force=force))


@tasks_import.command(name="solexecbench")
@click.argument("path", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--solution", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A published solution JSON for this problem: the task's seed (default: the reference itself).")
@_OUT
@_FORCE
def import_solexecbench_cmd(path: Path, solution: Path | None, out_dir: Path, force: bool) -> None:
    """Import a SOL-ExecBench problem folder (definition.json, workload.jsonl); every third workload is hidden."""
    _interpret_without_gpu()
    from evo.tasks_import import import_solexecbench

    _report([import_solexecbench(path, out_dir, solution=solution, force=force)])
