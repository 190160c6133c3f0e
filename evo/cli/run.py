"""`evo run` and `evo resume`: a search, with its live progress table."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click
from rich.live import Live
from rich.table import Table

from evo.cli.app import cli, console, out, show_logs
from evo.errors import EvoError


def _status_table(stats: Any, metric: str, orient: Any) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    best = "-" if stats.best_score is None else f"{orient(stats.best_score):.6g}"
    seed = "-" if stats.seed_score is None else f"{orient(stats.seed_score):.6g}"
    table.add_row("evaluations", f"{stats.done} / {stats.budget}")
    table.add_row(f"best {metric}", f"{best}   (seed {seed})")
    table.add_row("archive coverage", f"{stats.coverage:.1%}")
    table.add_row("QD-score", f"{stats.qd_score:.4g}")
    table.add_row("evaluations / min", f"{stats.evals_per_minute:.1f}")
    # Three different things: the candidate ran and failed; it was turned away unevaluated; the
    # operator made no child (a setting to look at, not a bad candidate).
    table.add_row("failed evaluations", _counts(stats.failures))
    table.add_row("rejected children", _counts(stats.rejections))
    table.add_row("operator errors", _counts(stats.operator_errors))
    if stats.llm_unavailable:
        table.add_row("LLM server away", f"{stats.llm_unavailable} calls (the other operators went on)")
    return table


def _counts(counter: Any) -> str:
    total = sum(counter.values())
    return f"{total} ({', '.join(f'{k} {v}' for k, v in counter.most_common())})" if total else "none"


def _check_llm_and_embedder(config: Any) -> None:
    """Fail before a run directory is made: a bad --llm (or vllm/GPUs missing), an embeddings server down.

    An LLM server that does not answer is only a warning: servers start late, and the run's other
    operators go on meanwhile.
    """
    from evo.embed import ServerEmbedder
    from evo.llm.engine import check_llm_spec

    if config.llm:
        for warning in check_llm_spec(config.llm, config.llm_serve_args, probe=True):
            console.print(f"warning: {warning}", highlight=False, markup=False)
    if config.embedder.startswith("server:"):
        ServerEmbedder.from_spec(config.embedder, retries=1).dim  # noqa: B018  # asks the server once


def _run_engine(engine: Any, quiet: bool) -> None:
    task = engine.task
    metric = task.config.metric

    def orient(score: float) -> float:
        return task.orient(score)  # orient is its own inverse

    if quiet or not console.is_terminal:
        last = [0.0]

        told_done = [False]  # the line at the budget's end is printed once (calls in flight still tick after it)

        def tick(stats: Any) -> None:
            at_end = stats.done >= stats.budget
            if (at_end and not told_done[0]) or (not at_end and time.monotonic() - last[0] >= 5):
                last[0], told_done[0] = time.monotonic(), at_end
                best = "-" if stats.best_score is None else f"{orient(stats.best_score):.6g}"
                console.print(f"[{stats.done}/{stats.budget}] best {metric} {best}, coverage {stats.coverage:.1%}, "
                              f"{stats.evals_per_minute:.0f} evals/min, {sum(stats.failures.values())} failed, "
                              f"{sum(stats.operator_errors.values())} operator errors", highlight=False)

        stats = engine.run(on_tick=None if quiet else tick)
    else:
        with Live(_status_table(engine.stats, metric, orient), console=console, refresh_per_second=4) as live:
            stats = engine.run(on_tick=lambda s: live.update(_status_table(s, metric, orient)))
    out.print(_status_table(stats, metric, orient))
    reason = "budget spent" if stats.done >= stats.budget else "stopped early: `evo resume` continues it"
    out.print(f"run directory: {engine.run_dir}  ({reason})", highlight=False)
    if engine.signal is not None and stats.done < stats.budget:
        # Stopped by Ctrl-C or SIGTERM: 128 + the signal's number, as shells and schedulers expect.
        raise click.exceptions.Exit(128 + engine.signal)


@cli.command()
@click.argument("task", required=False)
@click.option("--suite", help="Search many tasks in one run instead of TASK: a family (kernels), task names or "
              "globs (kernels/*_fwd), comma separated. One population per task, one --budget shared among them and "
              "spent where progress is made (with a floor for every task), elites of related tasks offered to the "
              "operators. Tasks' runs go in RUN_DIR/tasks/; `evo resume RUN_DIR` continues the whole suite.")
@click.option("--suite-floor", type=float, help="With --suite: the share of proposals kept for the tasks that are "
              "not progressing; each of K tasks gets at least FLOOR / K of them (default 0.25).")
@click.option("--no-transfer", is_flag=True, help="With --suite: no transfer between tasks (no related tasks' "
              "elites in prompts, no parameter transplant); the shared budget and its bandit remain.")
@click.option("--run-dir", required=True, type=click.Path(path_type=Path), help="Directory for the run (evo.db).")
@click.option("--budget", type=int, help="Finished evaluations in all, seeds included (default 200; with --suite, "
              "over all its tasks).")
@click.option("--workers", type=int, help="Evaluations at once (default 2; with --suite, over all its tasks).")
@click.option("--time-limit", type=float, help="Stop this invocation after this many seconds.")
@click.option("--budget-s", type=float, help="Training tasks: the training budget in seconds (lm_budget), or "
              "the cap per seed (time_to_target), instead of the task's budget_s. Kept for `evo resume`.")
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
              "vllm-offline:PATH (vLLM's offline engine); ray[:ADDRESS]: the Ray cluster's LLM replicas (`evo cluster "
              "llm start`), followed as they restart elsewhere, join or stop.")
@click.option("--backend", type=click.Choice(["local", "ray"]), help="Where candidates run: this machine "
              "(local, the default) or a Ray cluster (ray; needs `pip install 'evo[cluster]'`).")
@click.option("--ray-address", help="The Ray cluster for --backend ray: auto, ray://HOST:10001, ... "
              "(default: $RAY_ADDRESS, else a Ray started for this run).")
@click.option("--seed-from", "seed_from", multiple=True, help="More seeds (repeatable): a file, a folder "
              "(FOLDER:GLOB), a git repository at a commit (REPO@REV:GLOB), a JSONL/Parquet export, a run "
              "directory (its elites) or a published archive (archive/<family>-<device>.jsonl). Each goes "
              "through the pipeline like any candidate; near-duplicates are dropped.")
@click.option("--ablation", type=click.Choice(["none", "best-of-n", "random-parent"]), help="A baseline on the "
              "same budget: best-of-n (children of the seeds only, no archive parents) or random-parent "
              "(parents uniformly at random, no MAP-Elites selection).")
@click.option("--lessons-from", "lessons_from", type=click.Path(exists=True, file_okay=False),
              help="A run directory whose newest lessons (what helped, what failed, what is unexplored) this run "
              "starts with, in its LLM prompts beside its own (written every lessons_every evaluations).")
@click.option("--track", type=click.Choice(["tensorboard", "mlflow"]), multiple=True, help="Send the run's figures "
              "(best, coverage, QD-score, throughput, failure and audit-rejection rates) and its best program to "
              "TensorBoard (RUN_DIR/tensorboard/) or MLflow ($MLFLOW_TRACKING_URI, else RUN_DIR/mlruns/); repeatable. "
              "A slow or failing tracker never slows or stops the run.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file with run options.")
@click.option("--quiet", is_flag=True, help="No progress display.")
def run(task: str | None, suite: str | None, suite_floor: float | None, no_transfer: bool, run_dir: Path,
        config_file: Path | None, quiet: bool, **options: Any) -> None:
    """Start a search on TASK (see `evo tasks`), or on many tasks at once with --suite, writing everything to
    RUN_DIR/evo.db.

    \b
    One task:   evo run math/circle_packing_26 --run-dir runs/cp26 --budget 600
    A suite:    evo run --suite 'kernels/*_fwd' --run-dir runs/fwd --budget 800 --workers 8
    """
    from evo.config import RunConfig, read_options
    from evo.engine import Engine

    base = read_options(config_file) if config_file else {}
    given = _flags(options)
    if (task is None) == (suite is None):
        raise EvoError("give one TASK (see `evo tasks`) or --suite SPEC for many tasks, not both" if task else
                       "give a TASK to search (see `evo tasks`), or --suite SPEC to search many tasks at once")
    if suite is None and (suite_floor is not None or no_transfer):
        raise EvoError("--suite-floor and --no-transfer are options of a suite: give --suite SPEC instead of TASK")
    if suite is not None:
        from evo.suite.loop import Suite
        from evo.suite.run_dir import SuiteOptions

        if "task" in base:
            raise EvoError(f"{config_file} names a task ({base['task']!r}) but --suite gives the tasks: drop it")
        config = RunConfig.from_dict({**base, **given}, source="evo run --suite")
        show_logs()
        _check_llm_and_embedder(config)
        _train_budget(config.train_budget_s)
        floor = {} if suite_floor is None else {"floor": suite_floor}
        runner = Suite.create(run_dir, suite, config, SuiteOptions(**floor, transfer=not no_transfer))
        console.print(f"evo run --suite: {len(runner.tasks)} tasks, budget {config.budget} in all, {config.workers} "
                      f"workers, transfer {'on' if runner.options.transfer else 'off'}", highlight=False)
        _run_suite(runner, quiet)
        return
    config = RunConfig.from_dict({**base, **given, "task": task}, source="evo run")
    show_logs()
    _check_llm_and_embedder(config)
    _train_budget(config.train_budget_s)
    engine = Engine.create(run_dir, config)
    console.print(f"evo run: {engine.task.name}, budget {config.budget}, {config.workers} workers, "
                  f"{config.islands} islands, cells {config.cells}", highlight=False)
    _run_engine(engine, quiet)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--budget", type=int, help="New total budget (finished evaluations), not below those done.")
@click.option("--workers", type=int, help="Evaluations at once.")
@click.option("--time-limit", type=float, help="Stop this invocation after this many seconds.")
@click.option("--track", type=click.Choice(["tensorboard", "mlflow"]), multiple=True, help="Send the run's figures "
              "(best, coverage, QD-score, throughput, failure and audit-rejection rates) and its best program to "
              "TensorBoard (RUN_DIR/tensorboard/) or MLflow ($MLFLOW_TRACKING_URI, else RUN_DIR/mlruns/); repeatable. "
              "A slow or failing tracker never slows or stops the run.")
@click.option("--backend", type=click.Choice(["local", "ray"]), help="Where candidates run from now on (a driver "
              "restarted beside a Ray cluster re-attaches with --backend ray).")
@click.option("--ray-address", help="The Ray cluster to re-attach to (default: the stored one, else RAY_ADDRESS).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="TOML file of run options to change: operators and weights, llm endpoints, "
              "duplicate_threshold, workers, budget, time limit... (not the task, cells, islands, seed, embedder).")
@click.option("--quiet", is_flag=True, help="No progress display.")
def resume(run_dir: Path, config_file: Path | None, quiet: bool, **options: Any) -> None:
    """Continue the run in RUN_DIR after a stop, a crash or kill -9; nothing is lost or counted twice."""
    from evo.config import read_options
    from evo.suite import suite_meta, suite_of_member

    overrides = {**(read_options(config_file) if config_file else {}), **_flags(options)}
    show_logs()
    try:
        suite, owner = suite_meta(run_dir), suite_of_member(run_dir)
    except EvoError:  # an unreadable run directory: `Engine.open` says what is wrong with it, in its words
        suite = owner = None
    if suite is not None:
        from evo.suite.loop import Suite

        if overrides.get("llm"):
            _check_llm_and_embedder(_llm_only(overrides))
        _train_budget(suite.get("config", {}).get("train_budget_s"))
        runner = Suite.open(run_dir, overrides)
        console.print(f"evo resume: suite of {len(runner.tasks)} tasks, {runner.done}/{runner.budget} evaluations "
                      "done", highlight=False)
        _run_suite(runner, quiet)
        return
    if owner is not None:
        raise EvoError(f"{run_dir} is a task of the suite in {owner}: its budget is the suite's; resume the suite "
                       f"with `evo resume {owner}`")
    from evo.engine import Engine

    if overrides.get("llm"):
        _check_llm_and_embedder(_llm_only(overrides))
    _train_budget(_stored(run_dir, "train_budget_s"))
    engine = Engine.open(run_dir, overrides)
    console.print(f"evo resume: {engine.task.name}, {engine.stats.done}/{engine.config.budget} evaluations done",
                  highlight=False)
    if engine.stats.done >= engine.config.budget and not engine.store.pending_programs():
        engine.close()
        out.print(f"nothing to do: the budget of {engine.config.budget} is spent; `evo resume {run_dir} --budget N` "
                  "with a larger N continues the search", highlight=False)
        return
    _run_engine(engine, quiet)


def _suite_table(suite: Any) -> Table:
    table = Table("task", "evaluations", "proposals", "seed", "best", "gain / eval", "transfer offered",
                  title=f"suite: {suite.done} / {suite.budget} evaluations, {suite.evals_per_minute:.1f} / min",
                  title_justify="left")
    for r in suite.rows():
        seed = "-" if r["seed"] is None else f"{r['seed']:.6g}"
        best = "-" if r["best"] is None else f"{r['best']:.6g}"
        table.add_row(r["task"] + (" (set aside)" if r["set_aside"] else ""), str(r["evaluations"]),
                      str(r["granted"]), seed, f"{best} {r['metric']}", f"{r['value']:.3g}", str(r["offered"]))
    return table


def _run_suite(suite: Any, quiet: bool) -> None:
    """Run a suite with its live table (one row per task), then print where it stands."""
    if quiet or not console.is_terminal:
        last = [0.0]

        def tick(s: Any) -> None:
            if time.monotonic() - last[0] >= 5 or s.done >= s.budget:
                last[0] = time.monotonic()
                bests = ", ".join(f"{r['task']} {r['best']:.4g}" for r in s.rows() if r["best"] is not None)
                console.print(f"[{s.done}/{s.budget}] {s.evals_per_minute:.0f} evals/min; best: {bests}",
                              highlight=False)

        suite.run(on_tick=None if quiet else tick)
    else:
        with Live(_suite_table(suite), console=console, refresh_per_second=2) as live:
            suite.run(on_tick=lambda s: live.update(_suite_table(s)))
    out.print(_suite_table(suite))
    for task, why in suite.exhausted.items():
        out.print(f"set aside: {task}: {why}", highlight=False, markup=False)
    reason = "budget spent" if suite.done >= suite.budget else "stopped early: `evo resume` continues it"
    out.print(f"run directory: {suite.run_dir}  ({reason}; `evo show {suite.run_dir}` for transfer)", highlight=False)
    if suite.signal is not None and suite.done < suite.budget:
        raise click.exceptions.Exit(128 + suite.signal)


def _flags(options: dict[str, Any]) -> dict[str, Any]:
    """The command-line options given, under their config names."""
    mapping = {"time_limit": "time_limit_s", "budget_s": "train_budget_s"}
    # A repeatable option not given arrives as (): not given, so a --config's list stays.
    return {mapping.get(k, k): list(v) if isinstance(v, tuple) else v for k, v in options.items()
            if v is not None and v != ()}


def _train_budget(seconds: float | None) -> None:
    """--budget-s: the training harness reads its budget on the side that runs the job, from the environment
    (`EVO_TRAIN_BUDGET_S`, evo/eval/training/spec.py), so the run's option is handed on that way: to this
    process's evaluators and every process they start."""
    if seconds is not None:
        from evo.eval.training.spec import BUDGET_ENV

        os.environ[BUDGET_ENV] = repr(float(seconds))


def _stored(run_dir: Path, key: str) -> Any:
    """An option as the run stored it (None when the run, or the option, is not there: `open` says why)."""
    from evo.store import DB_NAME, Store

    if not (Path(run_dir) / DB_NAME).is_file():
        return None
    try:
        store = Store.in_dir(run_dir, readonly=True)
    except EvoError:  # an unreadable or unwritable run directory: `Engine.open` says which, in its words
        return None
    try:
        return (store.get_meta("config") or {}).get(key)
    finally:
        store.close()


def _llm_only(overrides: dict[str, Any]) -> Any:
    from evo.config import RunConfig

    return RunConfig.from_dict({k: overrides[k] for k in ("llm", "llm_serve_args", "operators") if k in overrides},
                               source="evo resume")
