"""The `evo` command. Errors a user can cause print one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from evo.errors import EvoError

# Piped output (logs, CI, tests) gets a wide page instead of rich's 80 columns, so that paths
# and tables are not folded or cut.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200, soft_wrap=True)
out = Console(width=None if sys.stdout.isatty() else 160)


def _status_table(stats: Any, metric: str, orient: Any) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    best = "-" if stats.best_score is None else f"{orient(stats.best_score):.6g}"
    seed = "-" if stats.seed_score is None else f"{orient(stats.seed_score):.6g}"
    table.add_row("evaluations", f"{stats.done} / {stats.budget}")
    table.add_row(f"best {metric}", f"{best}   (seed {seed})")
    table.add_row("archive coverage", f"{stats.coverage:.1%}")
    table.add_row("QD-score", f"{stats.qd_score:.4g}")
    table.add_row("evaluations / min", f"{stats.evals_per_minute:.1f}")
    fails = ", ".join(f"{k} {v}" for k, v in stats.failures.most_common()) or "none"
    table.add_row("failures", fails)
    return table


class _ConsoleLog(logging.Handler):
    """evo's warnings (a model server starting, unreachable, restarted) on the console, above the live table."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            console.print(f"{record.levelname.lower()}: {self.format(record)}", highlight=False, markup=False)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def _show_logs() -> None:
    logger = logging.getLogger("evo")
    if not any(isinstance(h, _ConsoleLog) for h in logger.handlers):
        logger.addHandler(_ConsoleLog())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _check_llm_and_embedder(config: Any) -> None:
    """Fail before a run directory is made: a bad --llm (or vllm/GPUs missing), an embeddings server down."""
    from evo.embed import ServerEmbedder
    from evo.llm.engine import check_llm_spec

    if config.llm:
        check_llm_spec(config.llm, config.llm_serve_args)
    if config.embedder.startswith("server:"):
        ServerEmbedder.from_spec(config.embedder, retries=1).dim  # noqa: B018  # asks the server once


def _run_engine(engine: Any, quiet: bool) -> None:
    task = engine.task
    metric = task.config.metric

    def orient(score: float) -> float:
        return task.orient(score)  # orient is its own inverse

    if quiet or not console.is_terminal:
        last = [0.0]

        def tick(stats: Any) -> None:
            if time.monotonic() - last[0] >= 5 or stats.done >= stats.budget:
                last[0] = time.monotonic()
                best = "-" if stats.best_score is None else f"{orient(stats.best_score):.6g}"
                console.print(f"[{stats.done}/{stats.budget}] best {metric} {best}, coverage {stats.coverage:.1%}, "
                              f"{stats.evals_per_minute:.0f} evals/min", highlight=False)

        stats = engine.run(on_tick=None if quiet else tick)
    else:
        with Live(_status_table(engine.stats, metric, orient), console=console, refresh_per_second=4) as live:
            stats = engine.run(on_tick=lambda s: live.update(_status_table(s, metric, orient)))
    out.print(_status_table(stats, metric, orient))
    reason = "budget spent" if stats.done >= stats.budget else "stopped early: `evo resume` continues it"
    out.print(f"run directory: {engine.run_dir}  ({reason})", highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evo")
def cli() -> None:
    """evo: open-ended evolutionary search over programs.

    \b
    Start a search:     evo run math/circle_packing_26 --run-dir runs/cp26 --budget 600
    Continue it:        evo resume runs/cp26
    Look at it:         evo show runs/cp26
    List tasks:         evo tasks
    """


@cli.command()
@click.argument("task")
@click.option("--run-dir", required=True, type=click.Path(path_type=Path), help="Directory for the run (evo.db).")
@click.option("--budget", type=int, help="Finished evaluations in all, seeds included (default 200).")
@click.option("--workers", type=int, help="Evaluations at once (default 2).")
@click.option("--time-limit", type=float, help="Stop this invocation after this many seconds.")
@click.option("--seed", type=int, help="Random seed of the run (default 0).")
@click.option("--islands", type=int, help="Number of islands (default 2).")
@click.option("--cells", type=click.Choice(["grid", "embedding"]), help="Grid over task descriptors, or "
              "CVT cells over code embeddings (PCA fitted on the seeds).")
@click.option("--embedder", help="Code embedding for novelty: ngram (default), minilm, or server:URL[#model] "
              "(a server's /v1/embeddings, e.g. server:http://127.0.0.1:8001#BAAI/bge-small-en-v1.5).")
@click.option("--llm", help="Model for the LLM operators: OpenAI-compatible server(s) URL[#model][@weight],... "
              "(e.g. http://127.0.0.1:8000 of `vllm serve`; several form a weighted ensemble and the bandit "
              "learns which model to ask); vllm:PATH (evo starts `vllm serve PATH` for the run and stops it at "
              "its end; more arguments: llm_serve_args in --config); or in process: transformers:PATH (CPU), "
              "vllm-offline:PATH (vLLM's offline engine).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file with run options.")
@click.option("--quiet", is_flag=True, help="No progress display.")
def run(task: str, run_dir: Path, config_file: Path | None, quiet: bool, **options: Any) -> None:
    """Start a search on TASK (see `evo tasks`), writing everything to RUN_DIR/evo.db."""
    from evo.config import RunConfig
    from evo.engine import Engine

    base = RunConfig.from_toml(config_file).to_dict() if config_file else {}
    mapping = {"time_limit": "time_limit_s"}
    given = {mapping.get(k, k): v for k, v in options.items() if v is not None}
    config = RunConfig.from_dict({**base, **given, "task": task})
    _show_logs()
    _check_llm_and_embedder(config)
    engine = Engine.create(run_dir, config)
    console.print(f"evo run: {engine.task.name}, budget {config.budget}, {config.workers} workers, "
                  f"{config.islands} islands, cells {config.cells}", highlight=False)
    _run_engine(engine, quiet)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--budget", type=int, help="New total budget (finished evaluations).")
@click.option("--workers", type=int, help="Evaluations at once.")
@click.option("--time-limit", type=float, help="Stop this invocation after this many seconds.")
@click.option("--quiet", is_flag=True, help="No progress display.")
def resume(run_dir: Path, budget: int | None, workers: int | None, time_limit: float | None, quiet: bool) -> None:
    """Continue the run in RUN_DIR after a stop, a crash or kill -9; nothing is lost or counted twice."""
    from evo.engine import Engine

    _show_logs()
    engine = Engine.open(run_dir, {"budget": budget, "workers": workers, "time_limit_s": time_limit})
    console.print(f"evo resume: {engine.task.name}, {engine.stats.done}/{engine.config.budget} evaluations done",
                  highlight=False)
    _run_engine(engine, quiet)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--top", default=5, show_default=True, help="How many best programs to list.")
@click.option("--source", "show_source", is_flag=True, help="Print the best program's source.")
def show(run_dir: Path, top: int, show_source: bool) -> None:
    """Best programs and the archive of the run in RUN_DIR."""
    from evo.report.summary import run_summary

    summary = run_summary(run_dir, top=top)
    out.print(summary.header, highlight=False)
    out.print(summary.best_table)
    out.print(summary.archive_table)
    if show_source and summary.best_source is not None:
        out.print(summary.best_source, markup=False, highlight=False)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Output file (default RUN_DIR/programs.<fmt>).")
def export(run_dir: Path, fmt: str, out_path: Path | None) -> None:
    """Write every program of the run (source, lineage, scores, state) to JSONL or Parquet."""
    from evo.store.export import export_programs

    path = out_path or Path(run_dir) / f"programs.{fmt}"
    n = export_programs(run_dir, path, fmt)
    out.print(f"wrote {n} programs to {path}", highlight=False)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--top", default=5, show_default=True, help="How many of the run's best programs to consider.")
@click.option("--archive", "archive_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("archive"),
              show_default=True, help="Folder to publish into (ARCHIVE/<family>/<task>/).")
def publish(run_dir: Path, top: int, archive_dir: Path) -> None:
    """Publish a run's best programs to the archive, each only with a `publish` verdict of pass.

    Each program is evaluated afresh through the pipeline at the publish level: the static checks with the
    stricter ones added (a kernel must launch a Triton kernel), and a fresh result for every dynamic check
    of the task's family. Each published program is written with a JSON record of its provenance (task,
    run, lineage, verdict).
    """
    from evo.publish import publish_run

    results = publish_run(run_dir, top, archive_dir)
    table = Table("id", "score", "verdict", "written to / why not")
    for r in results:
        why = str(r.path) if r.path else r.why_not[:150]
        table.add_row(r.program_id[:12], "-" if r.score is None else f"{r.score:.6g}", r.verdict.status, why)
    out.print(table)
    if results and not any(r.path for r in results):
        sys.exit(1)


@cli.command(name="eval")
@click.argument("task")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result (with the auditor's verdict) as JSON.")
def eval_(task: str, file: Path, as_json: bool) -> None:
    """Evaluate one program FILE on TASK and print its score and the auditor's verdict.

    The program goes the way every candidate goes (the evaluation pipeline): the static screen, then the
    task family's backend (the CPU sandbox; the GPU harness for kernels), the score, and the full audit.
    """
    from evo.eval.pipeline import evaluate_source, verdict_of
    from evo.task import load_task

    t = load_task(task)
    try:
        source = Path(file).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise EvoError(f"cannot read {file}: {getattr(e, 'strerror', None) or e}") from e
    with tempfile.TemporaryDirectory(prefix="evo-eval-") as scratch:
        result = evaluate_source(t, source, scratch=Path(scratch))
    verdict = verdict_of(result)
    value = result.metrics.get(t.config.metric)
    if as_json:
        data = {"task": t.name, "family": t.config.family, "ok": result.ok, "metric": t.config.metric,
                "value": value, "metrics": result.metrics, "failure": result.failure, "error": result.error,
                "seconds": round(result.wall_s, 3), "verdict": verdict.to_dict() if verdict else None}
        if result.report is not None:
            data["report"] = result.report
        out.print_json(json.dumps(data, default=str))
    else:
        if result.report and result.report.get("workloads"):
            _workload_table(t.name, result.report)
        if result.ok:
            out.print(f"{t.name}: {t.config.metric} = {value:.10g}  ({result.wall_s:.2f} s)", highlight=False)
            for k, v in result.metrics.items():
                out.print(f"  {k}: {v:.6g}", highlight=False)
        elif result.failure == "audit":  # the verdict below says why
            out.print(f"{t.name}: FAILED (audit)", highlight=False)
        else:
            out.print(f"{t.name}: FAILED ({result.failure}): {result.error}", highlight=False, markup=False)
        _print_verdict(verdict)
    if not result.ok:
        sys.exit(1)


def _print_verdict(verdict: Any) -> None:
    """The auditor's verdict: pass or fail, and each failing check with its reason."""
    if verdict is None:
        return
    if verdict.passed:
        out.print(f"verdict ({verdict.level}): pass, {len(verdict.checks)} checks", highlight=False)
        return
    out.print(f"verdict ({verdict.level}): FAIL ({', '.join(verdict.failed)})", highlight=False, markup=False)
    for name, reason in verdict.reasons:
        out.print(f"  - {name}: {reason}", highlight=False, markup=False)


def _workload_table(name: str, report: dict[str, Any]) -> None:
    """A kernel's per-workload correctness, times, T_SOL, baselines and scores."""
    def us(v: float | None) -> str:
        return f"{v * 1e6:.2f}" if v else "-"

    table = Table("workload", "hidden", "time µs", "spread", "eager µs", "compile µs", "T_SOL µs", "score",
                  title=f"{name} on {report.get('device')} (peaks: {report.get('peaks')})")
    for w in report["workloads"]:
        table.add_row(w["workload"], "yes" if w["hidden"] else "", us(w["time_s"]),
                      f"{w['spread']:.1%}" if w["spread"] is not None else "-", us(w["eager_s"]),
                      us(w["compile_s"]), us(w["t_sol_s"]), f"{w['score']:.3f}")
    out.print(table)


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


@cli.group()
def llm() -> None:
    """Model servers for the LLM operators."""


@llm.command()
@click.option("--model", required=True, help="Model path or name for `vllm serve`.")
@click.option("--port", default=8000, show_default=True, help="Port to serve on (loopback and all interfaces).")
@click.option("--tensor-parallel", default=1, show_default=True, help="GPUs to shard the model over.")
def serve(model: str, port: int, tensor_parallel: int) -> None:
    """Start `vllm serve`, wait until it is healthy, and keep it up until Ctrl-C.

    Then point runs at it: `evo run TASK --run-dir D --llm http://127.0.0.1:PORT`.
    """
    from evo.llm.serve import ManagedServer, vllm_command

    server = ManagedServer(vllm_command(model, port, tensor_parallel), f"http://127.0.0.1:{port}")
    with server:
        console.print(f"vllm serving {model} at http://127.0.0.1:{port} (log: {server.log_path}); Ctrl-C stops it",
                      highlight=False)
        assert server.proc is not None
        while server.proc.poll() is None:
            time.sleep(1.0)
    raise EvoError(f"the model server exited with code {server.proc.returncode}; its log ends:\n{server.log_tail()}")


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `evo` command."""
    try:
        code = cli.main(args=argv, standalone_mode=False)
    except EvoError as e:
        console.print(f"error: {e}", highlight=False, markup=False)
        sys.exit(2)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted: `evo resume RUN_DIR` continues the run")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
