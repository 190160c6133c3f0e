"""`evo eval` and `evo bench`: one program, or the kernel suite, through the evaluation pipeline."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from evo.cli.app import cli, console, out
from evo.errors import EvoError


@cli.command(name="eval")
@click.argument("task")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result (with the auditor's verdict) as JSON.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show everything the program printed that evo kept (the last 256 KiB), not only its tail.")
@click.option("--rung", default=None, metavar="NAME",
              help="Evaluate at one rung of the task family's (kernels: correctness, timing; training: short, "
                   "full); the last, the whole evaluation, by default.")
def eval_(task: str, file: Path, as_json: bool, verbose: bool, rung: str | None) -> None:
    """Evaluate one program FILE on TASK and print its score and the auditor's verdict.

    The program goes the way every candidate goes (the evaluation pipeline): the static screen, then the
    task family's backend (the CPU sandbox; the GPU harness for kernels), the score, and the full audit.
    What the program printed is shown after the result: its last lines and its traceback, with FILE's own
    name and line numbers (`--verbose`: all of it). `--rung correctness` checks a kernel on its visible
    workloads without timing it: a quick look before the whole evaluation.
    """
    from evo.eval.families import family_of
    from evo.eval.pipeline import evaluate_source, verdict_of
    from evo.task import load_task

    t = load_task(task)
    if rung is not None and rung not in (names := [r.name for r in family_of(t).fidelities]):
        raise EvoError(f"task {t.name} ({t.config.family}) has no rung {rung!r}; its rungs: {', '.join(names)}")
    try:
        source = Path(file).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise EvoError(f"cannot read {file}: {getattr(e, 'strerror', None) or e}") from e
    with tempfile.TemporaryDirectory(prefix="evo-eval-") as scratch:
        result = evaluate_source(t, source, scratch=Path(scratch), fidelity=rung)
    verdict = verdict_of(result)
    value = result.metrics.get(t.config.metric)
    printed = _as_users(printed_by(result), str(file))
    error = _as_users(result.error or "", str(file)) or result.error
    if as_json:
        data = {"task": t.name, "family": t.config.family, "rung": rung, "ok": result.ok, "metric": t.config.metric,
                "value": value, "metrics": result.metrics, "failure": result.failure, "error": error,
                "output": printed, "seconds": round(result.wall_s, 3),
                "verdict": verdict.to_dict() if verdict else None}
        if result.report is not None:
            data["report"] = result.report
        out.print_json(json.dumps(data, default=str))
    else:
        if result.report and result.report.get("workloads"):
            _workload_table(t.name, result.report)
        if result.ok and value is None:  # a rung that does not score (kernels' correctness)
            out.print(f"{t.name}: passed the {rung} rung, unscored  ({result.wall_s:.2f} s)", highlight=False)
        elif result.ok:
            out.print(f"{t.name}: {t.config.metric} = {value:.10g}  ({result.wall_s:.2f} s)", highlight=False)
            for k, v in result.metrics.items():
                out.print(f"  {k}: {v:.6g}", highlight=False)
        elif result.failure == "audit":  # the verdict below says why
            out.print(f"{t.name}: FAILED (audit)", highlight=False)
        else:
            out.print(f"{t.name}: FAILED ({result.failure}): {error}", highlight=False, markup=False)
        _print_output(printed, verbose)
        _print_verdict(verdict, result.ok, rung)
    if not result.ok:
        sys.exit(1)


TAIL_LINES = 20  # lines of output shown without --verbose (the traceback is shown besides)
TRACEBACK_LINES = 40  # lines of a traceback shown without --verbose (a deep recursion is long)
_CANDIDATE_PATH = re.compile(r'(?:[^\s"\'(]*/)?\bcandidate\.py\b')
_TRACEBACK = "Traceback (most recent call last):"
_EVO_DIR = str(Path(__file__).resolve().parents[1]) + "/"


def printed_by(result: Any) -> str:
    """What the candidate printed, as far as its backend kept it: the sandbox's output log (math), the kernel
    child's log tail and the harness's traceback (kernels); "" when it printed nothing."""
    if result.output:
        return str(result.output)
    report = result.report or {}
    return "".join(str(report.get(k) or "") for k in ("log_tail", "traceback"))


def _as_users(text: str, name: str) -> str:
    """`text` with the candidate's file, wherever the backend ran it (`candidate.py`, a job folder's path),
    written as the file the user gave, so that tracebacks and messages point into the user's own file."""
    return _CANDIDATE_PATH.sub(lambda _: name, text) if text else text


def _without_evo_frames(traceback: str) -> str:
    """A traceback without the frames of evo's own code (the child that imports the candidate) and of the
    interpreter's startup: what is left is the task's code calling the candidate and the candidate's lines."""
    kept: list[str] = []
    skipping = False
    for line in traceback.splitlines():
        if line.startswith('  File "'):
            skipping = line[len('  File "'):].startswith((_EVO_DIR, "<frozen "))
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def _print_output(printed: str, verbose: bool) -> None:
    """The program's output after its result: its last lines and its traceback, or with `verbose` all of it.
    Written as it is (no markup), so that what a program prints cannot style or fake evo's own lines."""
    if not printed.strip():
        return
    if verbose:
        click.echo("--- what the program printed ---")
        click.echo(printed.rstrip("\n"))
        click.echo("--- end of output ---")
        return
    from evo.eval.backends.local import STDERR_MISSED

    # A log cut at the size limit is followed by stderr's tail: the output shown is the log's, the traceback
    # the first one in that tail (an "Exception ignored" one may follow it).
    log, cut, stderr = printed.partition(STDERR_MISSED)
    if cut and _TRACEBACK in stderr:
        text, traceback = log, stderr[stderr.index(_TRACEBACK):]
    else:
        before, mark, after = printed.rpartition(_TRACEBACK)
        text, traceback = (before, mark + after) if mark else (printed, "")
    lines = text.rstrip("\n").splitlines()
    if lines:
        shown = lines[-TAIL_LINES:]
        more = f"; the last {len(shown)} of {len(lines)} lines, --verbose for all" if len(shown) < len(lines) else ""
        click.echo(f"--- what the program printed{more} ---")
        click.echo("\n".join(shown))
    if traceback:
        tb = _without_evo_frames(traceback).rstrip("\n").splitlines()
        if len(tb) > TRACEBACK_LINES:
            tb = [tb[0], f"  [... {len(tb) - TRACEBACK_LINES} lines; --verbose for all]", *tb[-TRACEBACK_LINES + 1:]]
        click.echo("--- its traceback ---")
        click.echo("\n".join(tb))
    click.echo("--- end of output ---")


def _print_verdict(verdict: Any, ok: bool = True, rung: str | None = None) -> None:
    """The auditor's verdict: pass or fail, and each failing check with its reason. A program that failed
    on its own (an exception, a timeout) with nothing found by the audit is not told it passed; one evaluated
    at a rung is told that the checks of later rungs did not run."""
    if verdict is None:
        return
    level = verdict.level if rung is None else f"{verdict.level} level, {rung} rung only"
    if verdict.passed:
        said = "pass" if ok else "nothing found (the program failed before it was scored)"
        later = "" if rung is None else "; the checks of later rungs did not run"
        out.print(f"verdict ({level}): {said}, {len(verdict.checks)} checks{later}", highlight=False)
        return
    out.print(f"verdict ({level}): FAIL ({', '.join(verdict.failed)})", highlight=False, markup=False)
    for name, reason in verdict.reasons:
        out.print(f"  - {name}: {reason}", highlight=False, markup=False)


def _workload_table(name: str, report: dict[str, Any]) -> None:
    """A kernel's per-workload correctness, times, T_SOL, baselines and scores."""
    def us(v: float | None) -> str:
        return f"{v * 1e6:.2f}" if v else "-"

    untimed = report.get("timed") is False  # the correctness rung: the visible workloads, checked only
    title = f"{name} on {report.get('device')} (peaks: {report.get('peaks')})"
    table = Table("workload", "hidden", "time µs", "spread", "eager µs", "compile µs", "T_SOL µs", "score",
                  title=title + (": visible workloads checked, nothing timed" if untimed else ""))
    for w in report["workloads"]:
        if untimed and w["hidden"]:
            continue
        table.add_row(w["workload"], "yes" if w["hidden"] else "", us(w["time_s"]),
                      f"{w['spread']:.1%}" if w["spread"] is not None else "-", us(w["eager_s"]),
                      us(w["compile_s"]), "-" if untimed else us(w["t_sol_s"]),
                      "-" if untimed else f"{w['score']:.3f}")  # nothing timed: no score to show
    out.print(table)
    limited = [w["workload"] for w in report["workloads"] if w.get("clock_limited")]
    if limited:  # the time shown is not what the candidate's own events said
        out.print(f"time µs of {', '.join(limited)}: the judge's clock saw more than the events reported, past the "
                  "slack, so those calls count as the clock's time (docs/auditor.md, \"Time\")",
                  highlight=False, markup=False)


@cli.command()
@click.argument("family", type=click.Choice(["kernels"]))
@click.option("--tasks", "task_list", help="Comma-separated task names (default: every kernel task).")
@click.option("--best-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of best-found candidates, one NAME.py per task, scored beside the seeds.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the table and details as JSON here.")
@click.option("--iters", default=30, show_default=True, help="Timed iterations per workload.")
@click.option("--no-compile", is_flag=True, help="Skip the torch.compile baseline (eager only: faster, weaker).")
def bench(family: str, task_list: str | None, best_dir: Path | None, json_out: Path | None, iters: int,
          no_compile: bool) -> None:
    """Score the kernel suite: eager, torch.compile, the seeds (and best found) against the speed of light.

    Every candidate goes through the evaluation pipeline (screened before it runs, audited in full after):
    a refused one scores 0 with the verdict as its note. Each task's reference is timed in the same session
    as its candidates. Without a GPU, Triton's
    interpreter checks correctness on the tasks' small shapes and the times mean nothing.
    """
    from evo.eval.bench import BenchConfig
    from evo.eval.suite import bench_suite, kernel_task_names

    names = kernel_task_names(task_list.split(",") if task_list else None)
    config = BenchConfig(iters=iters, compile_baseline=not no_compile)
    table = Table("task", "category", "eager", "compile", "seed", "best", "seed µs", "T_SOL µs", "note")

    rows_so_far: list[dict[str, Any]] = []

    def progress(name: str, row: dict[str, Any]) -> None:
        rows_so_far.append(row)
        if json_out:  # a long suite run that is cut short keeps what it measured
            Path(json_out).write_text(json.dumps({"rows": rows_so_far, "partial": True}, indent=1, default=str))
        console.print(f"{name}: seed {row['seed']:.3f}" + (f" ({row['seed_error']})" if row["seed_error"] else ""),
                      highlight=False, markup=False)
        table.add_row(name.split("/", 1)[1], row["category"], f"{row['eager']:.3f}", f"{row['compile']:.3f}",
                      f"{row['seed']:.3f}", "-" if row["best"] is None else f"{row['best']:.3f}",
                      f"{row['seed_us']:.1f}", f"{row['t_sol_us']:.1f}", (row["seed_error"] or "")[:60])

    with tempfile.TemporaryDirectory(prefix="evo-bench-") as scratch:
        result = bench_suite(names, Path(scratch), config, best_dir, progress=progress)
    out.print(table)
    means = result["mean_scores"]
    out.print("mean SOL score: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items() if v is not None),
              highlight=False)
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1, default=str))
        console.print(f"wrote {json_out}")
