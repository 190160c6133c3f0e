"""The kernel suite table: eager, torch.compile, the seed and the best found, scored against the speed of light.

Every candidate (seeds and best-found files alike) goes through the evaluation pipeline: screened before it
runs, audited in full after; a refused one is a row with score 0 and the verdict as its error.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evo.errors import EvoError
from evo.eval.backends.base import EvalResult
from evo.eval.backends.kernel import WorkerPool
from evo.eval.bench import BenchConfig
from evo.eval.families import family_of
from evo.eval.peaks import sol_score
from evo.eval.pipeline import Pipeline
from evo.program import Program
from evo.task import list_tasks, load_task

REPO = Path(__file__).resolve().parents[2]


def family_task_names(family: str, selected: list[str] | None = None) -> list[str]:
    """The tasks whose `task.toml` names `family`; `selected` picks some, by full name or by the last part."""
    names = [n for n in list_tasks() if family_of(load_task(n)).name == family]
    if selected:
        by_short = {n.split("/", 1)[-1]: n for n in names}
        wanted = {s if s in names else by_short.get(s, s) for s in selected}
        unknown = wanted - set(names)
        if unknown:
            raise EvoError(f"unknown {family} task(s): {', '.join(sorted(unknown))}. `evo tasks` lists them.")
        names = [n for n in names if n in wanted]
    return names


def kernel_task_names(selected: list[str] | None = None) -> list[str]:
    """The tasks of the `kernels` family (see `family_task_names`)."""
    return family_task_names("kernels", selected)


def seed_path(task_name: str) -> Path:
    return REPO / "kernels" / f"{task_name.split('/', 1)[1]}.py"


def bench_suite(task_names: list[str], scratch: Path, config: BenchConfig, best_dir: Path | None = None,
                devices: list[str] | None = None,
                progress: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Score eager, compile, the seed (and a best-found file per task from `best_dir`) on every task."""
    pool = WorkerPool(scratch, devices, tasks_held=2)  # task after task: the one at hand and the last
    rows = []
    try:
        for name in task_names:
            task = load_task(name)
            pipeline = Pipeline(task, workers=1, scratch=scratch, config=config, pool=pool)
            try:
                seed = suite_report(pipeline.evaluate_sync(Program(source=seed_path(name).read_text())))
                best = None
                if best_dir is not None and (best_dir / f"{name.split('/', 1)[1]}.py").is_file():
                    best_source = (best_dir / f"{name.split('/', 1)[1]}.py").read_text()
                    best = suite_report(pipeline.evaluate_sync(Program(source=best_source)))
            except EvoError as e:  # one broken task is a row of the table, not the end of the suite
                seed, best = {"score": 0.0, "error": str(e).splitlines()[0], "workloads": []}, None
            finally:
                pipeline.close()
            row = suite_row(name, task.reference.SPEC.category, seed, best)
            rows.append(row)
            if progress:
                progress(name, row)
    finally:
        pool.close()
    summary = {k: statistics.mean(r[k] for r in rows) for k in ("eager", "compile", "seed")} if rows else {}
    bests = [r["best"] for r in rows if r["best"] is not None]
    summary["best"] = statistics.mean(bests) if bests else None
    return {"rows": rows, "mean_scores": summary}


def suite_report(result: EvalResult) -> dict[str, Any]:
    """The harness's report of a pipeline result, with the pipeline's word on it: score 0 and the verdict's
    text as the error where the screen or the audit refused the candidate."""
    report = dict(result.report or {"workloads": []})
    report["score"] = float(result.score) if result.ok and result.score is not None else 0.0
    report["error"] = None if result.ok else result.error
    report["verdict"] = json.loads(result.verdict) if result.verdict else None
    return report


def suite_row(name: str, category: str, seed: dict[str, Any], best: dict[str, Any] | None) -> dict[str, Any]:
    """One task's scores: the baselines scored like candidates (eager alone, compile alone)."""
    wl = seed["workloads"]

    def mean_score(key: str) -> float:
        vals = [sol_score(w[key], w["baseline_s"], w["t_sol_s"]) if w.get(key) else 0.0 for w in wl]
        return statistics.mean(vals) if vals else 0.0

    first = wl[0] if wl else {}
    return {
        "task": name, "category": category, "device": seed.get("device"),
        "eager": mean_score("eager_s"), "compile": mean_score("compile_s"),
        "seed": float(seed.get("score", 0.0)), "seed_error": seed.get("error"),
        "best": float(best["score"]) if best else None, "best_error": best.get("error") if best else None,
        "first_workload": first.get("workload"), "t_sol_us": (first.get("t_sol_s") or 0) * 1e6,
        "eager_us": (first.get("eager_s") or 0) * 1e6, "seed_us": (first.get("time_s") or 0) * 1e6,
        "workloads": wl,
    }
