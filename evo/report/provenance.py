"""Where a run's programs came from, for `evo report` and `evo.load`.

Two kinds of origin are on record. A seed from outside the run (`evo run --seed-from`, `evo seed`) has its
provenance stored beside it (evo/seeding/: source, kind, path, commit, licence, author, the date it was read).
A task imported from a public benchmark (`evo tasks import`) has an `origin.json` in its folder (benchmark, file,
sha256, date), which is where its own seed came from.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from evo.task import Task
from evo.tasks_import.common import ORIGIN_FILE

if TYPE_CHECKING:
    from evo.report.load import Run

COLUMNS = ["program_id", "status", "value", "kind", "source", "path", "commit", "licence", "author", "imported",
           "origin_value", "origin_device"]


def task_origin(task: Task) -> dict[str, Any] | None:
    """The import record of a task imported from a benchmark (its `origin.json`), or None for any other task."""
    path = task.root / ORIGIN_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def provenance_frame(run: Run) -> pd.DataFrame:
    """One row per seed from outside the run, in the order they were read: its status and value in this run,
    and where it came from (`origin_value` and `origin_device`: what its source said it measured, if it did)."""
    with run.snapshot():
        stored = run.store.provenance()
        if not stored:
            return pd.DataFrame(columns=COLUMNS)
        progs = run.programs(["id", "status", "value"], ids=list(stored)).set_index("id")
    rows = []
    for pid, prov in stored.items():
        status = progs["status"].get(pid)
        rows.append([pid, status, progs["value"].get(pid), prov.get("kind"), prov.get("source"),
                     prov.get("path") or prov.get("program_id"), prov.get("commit"), prov.get("licence"),
                     prov.get("author"), prov.get("imported"), prov.get("value"), prov.get("device")])
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["value"] = df["value"].astype("float64")
    return df


def origin_line(origin: dict[str, Any]) -> str:
    """One plain sentence for a task's import record."""
    parts = [f"imported from {origin.get('benchmark', 'a benchmark')} {origin.get('file', '')}".rstrip()]
    if origin.get("sha256"):
        parts.append(f"sha256 {str(origin['sha256'])[:16]}")
    if origin.get("solution"):
        parts.append(f"seed: the published solution {origin['solution']}"
                     + (f" by {origin['author']}" if origin.get("author") else ""))
    if origin.get("licence"):
        parts.append(f"licence {origin['licence']}")
    if origin.get("imported"):
        parts.append(f"on {origin['imported']}")
    return ", ".join(parts)


def section_html(run: Run, table: Callable[..., str]) -> str:
    """The report's provenance section: the task's origin where it was imported, then the seeds from outside
    the run with where each came from (`table` renders a DataFrame as the report's other tables)."""
    out = []
    origin = task_origin(run.task)
    if origin is not None:
        out.append(f"<p>The task {html.escape(run.task.name)} was {html.escape(origin_line(origin))}.</p>")
    df = provenance_frame(run)
    if df.empty:
        out.append('<p class="note">no seed came from outside the run: every seed is the task\'s own</p>')
        return "\n".join(out)
    shown = df.dropna(axis=1, how="all")
    shown = shown.assign(program_id=shown["program_id"].str[:12])
    if "commit" in shown:
        shown["commit"] = [c[:12] if isinstance(c, str) else c for c in shown["commit"]]
    many = f"{len(df)} seeds came" if len(df) != 1 else "1 seed came"
    out.append(f"<p>{many} from outside the run; each went through the same screen, evaluation and audit as "
               "any child.</p>")
    text = tuple(c for c in shown.columns if c not in ("value", "origin_value"))
    out.append(table(shown, index=False, text_cols=text))
    return "\n".join(out)
