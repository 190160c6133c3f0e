"""`evo report`: one self-contained HTML file of a run (plots inline as PNG, code escaped, no script).

The page holds the headline numbers, progress over evaluations, the archive heatmap, the map of
code embeddings, the best program's lineage with the diff of each step, where admissions came
from (operators, models), why things failed (evaluations, proposals, the audit), and the best
programs with their code. Everything is read through `evo.load`; nothing is fetched from outside
when the file is opened.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from evo.errors import EvoError
from evo.report import metrics, plots, provenance
from evo.report.load import Run, load
from evo.report.transfer import transfer_section, write_suite_report
from evo.store import DB_NAME
from evo.suite import suite_meta

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; }
pre { background: #f7f7f7; border: 1px solid #e4e4e4; padding: .6em; overflow-x: auto; font-size: .8em; }
.add { color: #116611; } .del { color: #aa1111; } .hunk { color: #555; }
.note { color: #666; font-size: .9em; } details { margin: .4em 0; }
"""


def figure_png(fig: Figure, dpi: int = 90) -> str:
    """A figure as a `data:` URI of a PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Figure, alt: str) -> str:
    return f'<img src="{figure_png(fig)}" alt="{html.escape(alt)}">'


def _num(x: object, fmt: str = ".6g") -> str:
    if isinstance(x, int | float) and not isinstance(x, bool):
        return "-" if isinstance(x, float) and not math.isfinite(x) else format(x, fmt)
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else html.escape(str(x))


def _table(df: pd.DataFrame, index: bool = True, text_cols: tuple[str, ...] = ()) -> str:
    """An escaped HTML table of `df` (numbers formatted, text left-aligned)."""
    if df.empty:
        return '<p class="note">none</p>'
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    head = "".join(f'<th class="{"text" if c in text_cols or (index and c == cols[0]) else ""}">'
                   f"{html.escape(c)}</th>" for c in cols)
    body = []
    for idx, row in df.iterrows():
        cells = [f'<td class="text">{html.escape(str(idx))}</td>'] if index else []
        for c, v in zip(df.columns, row, strict=True):
            cls = ' class="text"' if str(c) in text_cols else ""
            cells.append(f"<td{cls}>{_num(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _diff(text: str) -> str:
    """A unified diff, escaped, with added and removed lines coloured."""
    out = []
    for line in text.splitlines():
        cls = "add" if line.startswith("+") else "del" if line.startswith("-") else "hunk" if line.startswith("@@") else ""
        esc = html.escape(line)
        out.append(f'<span class="{cls}">{esc}</span>' if cls else esc)
    return "<pre>" + "\n".join(out) + "</pre>"


def _section(title: str, build: Callable[[], str]) -> str:
    """A section; a part that cannot be drawn says why instead of failing the whole report."""
    try:
        body = build()
    except Exception as e:  # noqa: BLE001 - one broken plot must not cost the user the rest of the report
        body = f'<p class="note">could not draw this part: {html.escape(type(e).__name__)}: {html.escape(str(e))}</p>'
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def build_report(run: Run, top: int = 5, embedding_sample: int = 3000) -> str:
    """The report of `run` as one HTML document (of one commit of a live run)."""
    with run.snapshot():  # one view of the run; its tables read once however many parts use them
        return _report(run, top, embedding_sample)


def _report(run: Run, top: int, embedding_sample: int) -> str:
    prog, population = metrics.replay(run)  # one replay of the store serves the whole page
    s = metrics.summary(run, population)
    better = "higher" if s.objective == "maximize" else "lower"
    head = pd.DataFrame({
        "value": [s.task, f"{s.metric} ({s.objective}d, {better} is better)", f"{s.evaluations} / {s.budget}",
                  s.programs, _num(s.seed_value), _num(s.best_value), f"{s.coverage:.1%}", _num(s.qd_score),
                  s.elites, f"{s.duration_s:.0f} s", _num(s.evals_per_min, ".1f")],
    }, index=pd.Index(["task", "metric", "evaluations", "programs proposed", "best seed", "best",
                       "coverage (mean over islands)", "QD-score", "elites (distinct programs)",
                       "time running (sessions added up)", "evaluations / min (while running)"],
                      name="run"))
    parts = [f"<h1>evo report: {html.escape(str(run.run_dir))}</h1>",
             f'<p class="note">written {time.strftime("%Y-%m-%d %H:%M:%S")} from {html.escape(str(run.run_dir))}'
             " by <code>evo report</code>; values are the task's own.</p>",
             _table(head, text_cols=("value",))]
    parts.append(_section("Progress", lambda: _img(plots.progress_plot(prog, run), "progress over evaluations")))
    parts.append(_section("Archive", lambda: _img(plots.archive_heatmap(run, population=population), "archive heatmap")))
    parts.append(_section("Code embeddings", lambda: _img(
        plots.embedding_map(run, sample=embedding_sample), "map of program embeddings")))

    def novelty() -> str:
        nov = metrics.novelty(run)
        if nov.empty:
            return '<p class="note">no child was screened yet</p>'
        return _img(plots.novelty_plot(nov), "novelty distribution") + _table(
            nov.groupby("operator")["novelty"].describe()[["count", "mean", "25%", "50%", "75%", "max"]])
    parts.append(_section("Novelty of children", novelty))

    def lineage() -> str:
        steps = plots.lineage_steps(run)
        blocks = [_img(plots.lineage_tree(run), "lineage of the best program")]
        for st in steps:
            summary = (f"{html.escape(st.parent[:12])} &rarr; {html.escape(st.child[:12])} by "
                       f"<b>{html.escape(st.operator)}</b>: {html.escape(run.metric)} {_num(st.parent_value)} "
                       f"&rarr; {_num(st.child_value)}")
            blocks.append(f"<details open><summary>{summary}</summary>{_diff(st.diff)}</details>")
        return "\n".join(blocks)
    parts.append(_section("Lineage of the best program", lineage))
    parts.append(_section("Admissions per operator", lambda: _table(metrics.admissions_by(run, "operator"))))
    parts.append(_section("Admissions per model", lambda: _table(metrics.admissions_by(run, "model"))))
    if transfer := transfer_section(run):  # a task of a suite run (evo/report/transfer.py)
        parts.append(f"<h2>Transfer from other tasks</h2>\n{transfer}\n")
    parts.append(_section("Failures", lambda: _table(metrics.failure_reasons(run), index=False,
                                                     text_cols=("stage", "kind", "example"))))
    parts.append(_section("Audit rejections", lambda: _table(metrics.audit_rejections(run), index=False,
                                                             text_cols=("check", "level", "example"))))
    parts.append(_section("Provenance", lambda: provenance.section_html(run, _table)))
    parts.append(_section(f"Best {top} programs", lambda: _best(run, top)))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>evo report: {html.escape(run.task.name)}</title><style>{_CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def _best(run: Run, top: int) -> str:
    best = run.best(top, columns=["id", "operator", "island", "value", "source"])
    if best.empty:
        return '<p class="note">no evaluated program yet</p>'
    out = []
    for rank, row in enumerate(best.itertuples(index=False), 1):
        out.append(f"<h3>#{rank} {html.escape(row.id)}: {html.escape(run.metric)} {_num(row.value, '.10g')} "
                   f"({html.escape(row.operator)}, island {row.island})</h3>"
                   f"<pre><code>{html.escape(row.source)}</code></pre>")
    return "\n".join(out)


def write_report(run_dir: Path, out: Path | None = None, top: int = 5) -> Path:
    """Write the report of the run in `run_dir` to `out` (default RUN_DIR/report.html); returns the path."""
    if suite_meta(run_dir) is not None:  # a suite's directory: its tasks side by side (evo/report/transfer.py)
        return write_suite_report(run_dir, out)
    if not (Path(run_dir) / DB_NAME).is_file():  # before the output's checks: their advice would not help
        raise EvoError(f"{run_dir} is not an evo run directory (no {DB_NAME} in it)" if Path(run_dir).is_dir()
                       else f"{run_dir} is a file, not a run directory" if Path(run_dir).exists()
                       else f"{run_dir}: no such run directory")
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if path.is_dir():
        raise EvoError(f"cannot write {path}: it is a directory; give a file name such as {path / 'report.html'}")
    if not path.parent.is_dir():
        raise EvoError(f"cannot write {path}: {path.parent} does not exist; create it or choose another --out")
    with load(run_dir) as run:
        text = build_report(run, top=top)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise EvoError(f"cannot write {path}: {e.strerror}; choose another --out") from e
    return path
