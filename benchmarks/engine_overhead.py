"""Engine overhead: how many candidates a second the engine's own bookkeeping sustains.

The evaluator here (`InstantEvaluator`) runs no candidate code: it scores a program from its
numeric literals in microseconds, so what is timed is everything else the engine does per
candidate: sample parents, propose with the non-LLM operators (constants, params, crossover),
screen (parse, embed, near-duplicate search), store, commit the evaluation, admit.

Two phases on the task math/circle_packing_26, in a temporary run directory:

1. fill:    `Engine.create` and run from an empty store up to `--fill` evaluations;
2. measure: `Engine.open` with a budget `--measure` higher and run those, with the store
   already full. Phase 2 is the figure the target (500 candidates/s) applies to.

A per-stage breakdown (time inside `Engine.propose`, `Engine.record`, the store's writes, ...)
comes from wrapping those methods with timers; stages nest (propose contains sample, operator,
embed, novelty and the store's add_program), so they do not sum to the total.

    .venv/bin/python benchmarks/engine_overhead.py              # 10,000 then 5,000 more
    .venv/bin/python benchmarks/engine_overhead.py --quick      # 500 then 500: a smoke run
    .venv/bin/python benchmarks/engine_overhead.py --fill 20000 --measure 10000 --out /tmp/x.json

Prints a table and writes JSON (default benchmarks/results/engine_overhead.json).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evo.config import RunConfig
from evo.engine import Engine
from evo.eval.backends.base import EvalResult
from evo.program import Program

ROOT = Path(__file__).resolve().parent.parent
TASK = "math/circle_packing_26"
TARGET = 500.0  # candidates per second, with 10,000 programs in the store
_NUMBER = re.compile(r"(?<![\w.])\d+\.\d*|(?<![\w.])\d+")


class InstantEvaluator:
    """A synthetic evaluator: deterministic, instant, no candidate code run.

    The score is a smooth function of the program's numeric literals (so mutations of the
    constants move it and the search has something to climb); the two descriptors
    (radius_std in [0, 0.06], boundary_fraction in [0, 0.7]) come from the literals too, so
    children spread over the grid. About 5% of programs (by a hash of their text) fail as
    "invalid".
    """

    def __init__(self, workers: int, failure_rate: float = 0.05):
        self.workers = workers
        self.failure_rate = failure_rate

    async def evaluate(self, program: Program) -> EvalResult:
        text = program.text
        if zlib.crc32(text.encode()) % 10_000 < self.failure_rate * 10_000:
            return EvalResult(ok=False, failure="invalid", error="synthetic failure")
        values = [float(x) for x in _NUMBER.findall(text)] or [0.0]
        score = 2.0 + 0.6 * sum(math.sin(3.0 * v + i) for i, v in enumerate(values)) / len(values)
        total = sum(values)
        descriptors = (0.06 * (total * 0.37 % 1.0), 0.7 * (total * 0.11 % 1.0))
        metrics = {"sum_radii": score, "radius_std": descriptors[0], "boundary_fraction": descriptors[1]}
        return EvalResult(ok=True, score=score, metrics=metrics, descriptors=descriptors)

    def close(self) -> None:
        pass


class StageTimer:
    """Wall time and call count per named stage, from wrapped methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, obj: Any, method: str, stage: str) -> None:
        """Replace `obj.method` (sync or async) on the instance by a timed version."""
        fn = getattr(obj, method)
        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self._add(stage, start)

            setattr(obj, method, timed_async)
        else:

            @functools.wraps(fn)
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._add(stage, start)

            setattr(obj, method, timed)

    def _add(self, stage: str, start: float) -> None:
        self.seconds[stage] += time.perf_counter() - start
        self.calls[stage] += 1

    def instrument(self, engine: Engine) -> None:
        self.wrap(engine, "propose", "propose")
        self.wrap(engine.population, "sample", "  propose: sample parents")
        for op, _ in engine.operators:
            self.wrap(op, "propose", "  propose: operator")
        self.wrap(engine.embedder, "embed", "  propose: embed")
        self.wrap(engine.novelty, "assess", "  propose: novelty search")
        self.wrap(engine.store, "add_program", "  propose: store add_program")
        self.wrap(engine, "record", "record")
        self.wrap(engine.store, "record_evaluation", "  record: store record_evaluation")
        self.wrap(engine.store, "log", "store log (events)")

    def report(self, total: float) -> dict[str, dict[str, float]]:
        return {
            stage: {"seconds": round(s, 4), "calls": self.calls[stage], "share": round(s / total, 4)}
            for stage, s in self.seconds.items()
        }


def run_phase(name: str, make: Callable[[], Engine], workers: int) -> dict[str, Any]:
    """Open or create the engine (timed apart), run it to its budget, return the figures."""
    t0 = time.perf_counter()
    engine = make()
    setup_s = time.perf_counter() - t0
    evaluations_at_start = engine.store.count_evaluations()
    programs_at_start = engine.store.count_programs()
    timer = StageTimer()
    timer.instrument(engine)
    t0 = time.perf_counter()
    stats = asyncio.run(engine.run_async())
    seconds = time.perf_counter() - t0
    evaluated = stats.done - stats.done_at_start
    result = {
        "phase": name,
        "setup_s": round(setup_s, 3),
        "evaluations_at_start": evaluations_at_start,
        "programs_at_start": programs_at_start,
        "candidates_evaluated": evaluated,
        "proposals": stats.proposals,
        "rejections": {k: v for k, v in stats.failures.items() if k in ("parse_error", "near_duplicate",
                                                                          "operator_error")},
        "failed_evaluations": stats.failures.get("invalid", 0),
        "seconds": round(seconds, 3),
        "candidates_per_s": round(evaluated / seconds, 1),
        "proposals_per_s": round(stats.proposals / seconds, 1),
        "best_score": stats.best_score,
        "coverage": round(stats.coverage, 4),
        "stages": timer.report(seconds),
        "workers": workers,
    }
    engine.close()
    return result


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def print_table(phases: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"Engine overhead on {TASK} (instant evaluator)")
    for col in ("phase", "programs in store at start", "candidates evaluated", "proposals", "seconds",
                "candidates/s", "target", "pass"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for p in phases:
        target = p.get("target_per_s")
        verdict = "" if target is None else ("[green]pass[/]" if p["passed"] else "[red]FAIL[/]")
        table.add_row(p["phase"], f"{p['evaluations_at_start']:,}", f"{p['candidates_evaluated']:,}",
                      f"{p['proposals']:,}", f"{p['seconds']:.2f}", f"{p['candidates_per_s']:,.0f}",
                      "" if target is None else f"{target:.0f}/s", verdict)
    console.print(table)
    stages = Table(title="Where the time goes (measure phase; nested stages indented)")
    for col in ("stage", "calls", "seconds", "share of run", "us/call"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for stage, s in phases[-1]["stages"].items():
        stages.add_row(stage, f"{s['calls']:,}", f"{s['seconds']:.2f}", f"{s['share']:.0%}",
                       f"{1e6 * s['seconds'] / max(s['calls'], 1):.0f}")
    console.print(stages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status 1 when the measure phase is below the target; 0 otherwise.",
    )
    parser.add_argument("--fill", type=int, default=10_000,
                        help="evaluations of phase 1, from an empty store (default 10000; seeds count)")
    parser.add_argument("--measure", type=int, default=5_000,
                        help="evaluations of phase 2, timed with --fill programs already stored (default 5000)")
    parser.add_argument("--workers", type=int, default=4, help="evaluation coroutines (default 4)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine_overhead.json",
                        help="where to write the JSON (default benchmarks/results/engine_overhead.json)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a CI smoke run: --fill 500 --measure 500, no verdict")
    args = parser.parse_args(argv)
    if args.quick:
        args.fill, args.measure = 500, 500
    console = Console()
    with tempfile.TemporaryDirectory(prefix="evo-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        config = RunConfig(task=TASK, budget=args.fill, workers=args.workers)
        console.print(f"phase 1: filling the store to {args.fill:,} evaluations ...")
        fill = run_phase("fill", lambda: Engine.create(run_dir, config, InstantEvaluator(args.workers)),
                         args.workers)
        console.print(f"phase 2: {args.measure:,} more with {fill['candidates_evaluated']:,} stored ...")
        budget = args.fill + args.measure
        measure = run_phase("measure", lambda: Engine.open(run_dir, {"budget": budget},
                                                           InstantEvaluator(args.workers)), args.workers)
    # The target applies to a store of 10,000 programs or more (not to --quick runs).
    if not args.quick and args.fill >= 10_000:
        measure["target_per_s"] = TARGET
        measure["passed"] = measure["candidates_per_s"] >= TARGET
    phases = [fill, measure]
    print_table(phases, console)
    report = {
        "benchmark": "engine_overhead",
        "task": TASK,
        "fill": args.fill,
        "measure": args.measure,
        "target_per_s": TARGET,
        "passed": measure.get("passed"),
        "phases": phases,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "git_commit": git_commit(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 1 if measure.get("passed") is False else 0


if __name__ == "__main__":
    sys.exit(main())
