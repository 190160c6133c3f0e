"""How much of a search's progress came through transfer between tasks: for `evo show` and `evo report`.

A suite run (evo/suite/) keeps one store per task; each records which children had a cross-task parent or
inspiration (evo/store/transfer.py). This module reads those records back:

- `transfer_note(store)`: one line for a task's run (nothing for a run without transfer records);
- `suite_rows(run_dir)` / `suite_table(run_dir)`: a suite's tasks side by side, with the seed, the best and
  the transfer credit of each, for `evo show RUN_DIR`;
- `transfer_section(run)`: the report's section for a task's run; `write_suite_report`: a suite's page.

Values are the task's own (lower is better for a minimised task). The share of progress is the part of the
rise of the task's best (from its best seed on) that came from children with a cross-task source; shares
of different tasks are averaged, never their rises, which are in different units.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from evo.errors import EvoError
from evo.store import Store
from evo.store.transfer import TransferCredit, transfer_credit, transfers

if TYPE_CHECKING:
    from evo.report.load import Run


def transfer_note(store: Store) -> str:
    """One line on the run's transfer credit ("" when no child of it had a cross-task source)."""
    credit = transfer_credit(store)
    if not credit.proposed_transfer:
        return ""
    return "transfer: " + _credit_text(credit)


def _credit_text(credit: TransferCredit) -> str:
    sources = ", ".join(f"{task} {n}" for task, n in credit.by_task.most_common()) or "none admitted"
    return (f"{credit.admitted_transfer} of {credit.admitted} admitted children had a cross-task parent or "
            f"inspiration (from {sources}; {credit.proposed_transfer} such children made); "
            f"{credit.share:.0%} of the best's rise came through transfer "
            f"({credit.improvements_transfer} of {credit.improvements} rises)")


def _value(program: Any, metric: str) -> float | None:
    value = program.metrics.get(metric) if program is not None else None
    return None if value is None else float(value)


def suite_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Per task of the suite in `run_dir`: evaluations, seed and best value, and its transfer credit."""
    from evo.suite.layout import member_dir, suite_meta
    from evo.task import load_task

    meta = suite_meta(run_dir)
    if meta is None:
        raise EvoError(f"{run_dir} is not a suite's run directory; `evo show` reads a run of one task as such")
    rows = []
    for name, ref in zip(meta["tasks"], meta.get("refs", meta["tasks"]), strict=True):
        store = Store.in_dir(member_dir(run_dir, name), readonly=True)
        try:
            metric = load_task(ref).config.metric
            seeds = [store.get_program(pid) for pid in store.valid_ids("seed")]
            best_seed = max(seeds, key=lambda p: p.score or float("-inf")) if seeds else None
            best = store.best_programs(limit=1)
            credit = transfer_credit(store)
            rows.append({"task": name, "metric": metric, "evaluations": store.count_evaluations(),
                         "seed": _value(best_seed, metric), "best": _value(best[0] if best else None, metric),
                         "best_operator": best[0].operator if best else None,
                         "best_by_transfer": bool(best) and best[0].id in transfers(store),
                         "admitted": credit.admitted, "admitted_transfer": credit.admitted_transfer,
                         "improvements": credit.improvements, "improvements_transfer": credit.improvements_transfer,
                         "share": credit.share if credit.gain > 0 else None,
                         "from": dict(credit.by_task.most_common())})
        finally:
            store.close()
    return rows


def suite_totals(rows: list[dict[str, Any]]) -> str:
    """One line over the suite's tasks: admissions and rises through transfer, the mean share of progress."""
    admitted = sum(r["admitted"] for r in rows)
    admitted_t = sum(r["admitted_transfer"] for r in rows)
    rises = sum(r["improvements"] for r in rows)
    rises_t = sum(r["improvements_transfer"] for r in rows)
    shares = [r["share"] for r in rows if r["share"] is not None]
    mean = f"{sum(shares) / len(shares):.0%}" if shares else "-"
    return (f"through transfer: {admitted_t} of {admitted} admitted children, {rises_t} of {rises} rises of a "
            f"task's best; mean share of a task's progress {mean} (over the {len(shares)} tasks that rose)")


def suite_table(run_dir: Path) -> tuple[Table, str]:
    """`evo show` of a suite: a row per task, and the line of totals."""
    rows = suite_rows(run_dir)
    table = Table("task", "evaluations", "seed", "best", "best by", "admitted (transfer)", "rises (transfer)",
                  "progress via transfer", "drew on", title=f"suite {run_dir}: {len(rows)} tasks", title_justify="left")
    table.columns[0].no_wrap = True  # a task's name is never cut: two names alike must stay apart
    table.columns[-1].overflow = "fold"
    for r in rows:
        table.add_row(r["task"], str(r["evaluations"]), _num(r["seed"]), f"{_num(r['best'])} {r['metric']}",
                      (r["best_operator"] or "-") + (" (transfer)" if r["best_by_transfer"] else ""),
                      f"{r['admitted']} ({r['admitted_transfer']})", f"{r['improvements']} ({r['improvements_transfer']})",
                      "-" if r["share"] is None else f"{r['share']:.0%}",
                      ", ".join(f"{t} {n}" for t, n in r["from"].items()) or "-")
    return table, suite_totals(rows)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def transfer_section(run: Run) -> str:
    """The report's section on transfer for a task's run ("" when none of its children had a cross-task source)."""
    note = transfer_note(run.store)
    return "" if not note else f"<p>{html.escape(note)}</p>"


def write_suite_report(run_dir: Path, out: Path | None = None) -> Path:
    """A suite's report: its tasks side by side with their transfer credit; each task's own report is
    `evo report RUN_DIR/tasks/<task>`. Returns the path written (default RUN_DIR/report.html)."""
    from evo.suite.layout import member_dir

    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    rows = suite_rows(run_dir)
    head = ("task", "evaluations", "seed", "best", "best by", "admitted (transfer)", "rises (transfer)",
            "progress via transfer", "drew on")
    body = []
    for r in rows:
        cells = (r["task"], r["evaluations"], _num(r["seed"]), f"{_num(r['best'])} {r['metric']}",
                 (r["best_operator"] or "-") + (" (transfer)" if r["best_by_transfer"] else ""),
                 f"{r['admitted']} ({r['admitted_transfer']})", f"{r['improvements']} ({r['improvements_transfer']})",
                 "-" if r["share"] is None else f"{r['share']:.0%}",
                 ", ".join(f"{t} {n}" for t, n in r["from"].items()) or "-")
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    members = "".join(f"<li><code>evo report {html.escape(str(member_dir(run_dir, r['task'])))}</code></li>"
                      for r in rows)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>evo report: suite</title>'
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
            f"<h1>evo report: suite {html.escape(str(run_dir))}</h1>"
            f"<p>written {time.strftime('%Y-%m-%d %H:%M:%S')} by <code>evo report</code>; values are each task's "
            f"own.</p><p>{html.escape(suite_totals(rows))}</p>"
            "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(body) + "</table>"
            f"<h2>Each task's own report</h2><ul>{members}</ul></body></html>\n")
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise EvoError(f"cannot write {path}: {e.strerror}; choose another --out") from e
    return path
