"""Engine overhead: how many candidates a second the engine's own bookkeeping sustains.

The evaluator here (`InstantEvaluator`) runs no candidate code: it scores a program from its
numeric literals in microseconds, so what is timed is everything else the engine does per
candidate: sample parents, propose with the non-LLM operators (constants, params, crossover by
default), screen (parse where the operator does not vouch for its children, embed,
near-duplicate search), store, commit the evaluation, admit.

Two phases on the task math/circle_packing_26, in a temporary run directory:

1. fill:    `Engine.create`, then run from an empty store up to `--fill` evaluations;
2. measure: `Engine.open` with a budget `--measure` higher, run those with the store full.

The target (500 candidates/s with 10,000 programs stored) applies to phase 2. Each phase also
reports proposals (rejected ones included), CPU time, and a per-stage breakdown from timers
wrapped around `Engine.propose`, `Engine.record`, the operators, the embedder, the novelty
search and the store's writes. Stages nest (indented under their parent); an `other` row is the
parent's time outside its timed children. The garbage collector's time (by generation, from
`gc.callbacks`) is printed under the table: it lands inside whichever stage allocated.

    .venv/bin/python benchmarks/engine_overhead.py              # 10,000 then 5,000 more
    .venv/bin/python benchmarks/engine_overhead.py --quick      # 500 then 500: a smoke run
    .venv/bin/python benchmarks/engine_overhead.py --operators constants=1 --out /tmp/constants.json

Prints two tables and writes JSON (default benchmarks/results/engine_overhead.json). Exit
status 1 when a full-size run misses the target. On a shared machine, compare runs by their
`cpu_candidates_per_s` and the load average recorded with them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
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
TARGET = 500.0  # candidates per second, measured with TARGET_STORE programs already stored
TARGET_STORE = 10_000
_NUMBER = re.compile(r"\d+\.?\d*")  # digits inside names count too: cheap and deterministic


class InstantEvaluator:
    """A synthetic evaluator: deterministic, instant, no candidate code run.

    The score is a smooth function of the program's numeric literals, so mutating constants
    moves it and the search has something to climb. The descriptors (radius_std in [0, 0.06],
    boundary_fraction in [0, 0.7], as the task declares) come from the literals too, so children
    spread over the grid. About `failure_rate` of programs (by a hash of their text) fail as
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


class GcTimer:
    """Time spent in the garbage collector (it runs inside whichever stage allocates): by generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self.longest = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        took = time.perf_counter() - self._start
        self.seconds[info["generation"]] += took
        self.collections[info["generation"]] += 1
        self.longest = max(self.longest, took)

    def report(self, candidates: int) -> dict[str, Any]:
        total = sum(self.seconds)
        return {"seconds": round(total, 4), "us_per_candidate": round(1e6 * total / max(candidates, 1), 1),
                "by_generation_s": [round(x, 4) for x in self.seconds], "collections": self.collections,
                "longest_ms": round(1e3 * self.longest, 1)}


class StageTimer:
    """Wall time and call count per stage, from methods wrapped on the engine's own objects."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, obj: Any, method: str, stage: str) -> None:
        """Replace `obj.method` (sync or async) on that instance by a timed version."""
        fn = getattr(obj, method)

        def done(start: float) -> None:
            self.seconds[stage] += time.perf_counter() - start
            self.calls[stage] += 1

        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    done(start)

            setattr(obj, method, timed_async)
        else:

            @functools.wraps(fn)
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    done(start)

            setattr(obj, method, timed)

    def instrument(self, engine: Engine) -> None:
        self.wrap(engine, "propose", "propose")
        self.wrap(engine.population, "sample", "  sample parents")
        for op, _ in engine.operators:
            self.wrap(op, "propose", f"  operator {op.name}")
        self.wrap(engine.embedder, "embed", "  embed")
        # With a proposal process, operators and embedding run there: what this loop spends on
        # their children is the screen and store below `_take_outcome`; `propose` then also
        # counts the wait for the process, which overlaps with the other stages.
        self.wrap(engine, "_take_outcome", "  screen + store (children of the proposal process)")
        self.wrap(engine.novelty, "assess", "  novelty search")
        self.wrap(engine.store, "add_program", "  store add_program")
        self.wrap(engine.evaluator, "evaluate", "evaluate (synthetic)")
        self.wrap(engine, "record", "record")
        self.wrap(engine.store, "record_evaluation", "  store record_evaluation")
        self.wrap(engine.store, "log", "store log")

    def report(self, total: float) -> dict[str, dict[str, float]]:
        """Stages in call-tree order, with an `other` row per parent and the untimed rest."""
        rows: dict[str, dict[str, float]] = {}
        for parent, other in (("propose", "parse, new Program, ..."), ("record", "decide, admit, stats")):
            children = sorted(s for s in self.seconds if s.startswith("  ") and _parent(s) == parent)
            rows[parent] = _row(self.seconds[parent], self.calls[parent], total)
            for child in children:
                rows[child] = _row(self.seconds[child], self.calls[child], total)
            rest = self.seconds[parent] - sum(self.seconds[c] for c in children)
            rows[f"  other: {other}"] = _row(rest, self.calls[parent], total)
        for stage in ("evaluate (synthetic)", "store log"):
            rows[stage] = _row(self.seconds[stage], self.calls[stage], total)
        timed = sum(r["seconds"] for name, r in rows.items() if not name.startswith(" "))
        rows["event loop, queue, rest"] = _row(total - timed, 0, total)
        return rows


def _parent(stage: str) -> str:
    return "record" if "record_evaluation" in stage else "propose"


def _row(seconds: float, calls: int, total: float) -> dict[str, float]:
    return {"seconds": round(seconds, 4), "calls": calls, "share": round(seconds / total, 4)}


def run_phase(name: str, make: Callable[[], Engine]) -> dict[str, Any]:
    """Create or open the engine (timed apart), run it to its budget, return the figures."""
    t0 = time.perf_counter()
    engine = make()
    setup_s = time.perf_counter() - t0
    evaluations_at_start = engine.store.count_evaluations()
    programs_at_start = engine.store.count_programs()
    timer = StageTimer()
    timer.instrument(engine)
    load_before = os.getloadavg()[0]
    collector = GcTimer()
    gc.callbacks.append(collector)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        stats = asyncio.run(engine.run_async())
    finally:
        gc.callbacks.remove(collector)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    engine.close()
    evaluated = stats.done - stats.done_at_start
    return {
        "phase": name,
        "setup_s": round(setup_s, 3),  # Engine.create / Engine.open (replay of the store)
        "evaluations_at_start": evaluations_at_start,
        "programs_at_start": programs_at_start,  # rejected proposals included
        "candidates_evaluated": evaluated,
        "proposals": stats.proposals,
        "rejections": {**stats.rejections, "operator_error": sum(stats.operator_errors.values())},
        "failed_evaluations": stats.failures.get("invalid", 0),
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu_s, 3),
        "candidates_per_s": round(evaluated / seconds, 1),
        "cpu_candidates_per_s": round(evaluated / cpu_s, 1),
        "proposals_per_s": round(stats.proposals / seconds, 1),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
        "best_score": stats.best_score,
        "coverage": round(stats.coverage, 4),
        "stages": timer.report(seconds),
        "garbage_collection": collector.report(evaluated),  # inside the stages' times, not beside them
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def print_tables(phases: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"Engine overhead on {TASK} (instant evaluator)")
    columns = ("phase", "programs in store at start", "candidates evaluated", "proposals", "seconds",
               "candidates/s", "cpu-bound /s", f"target {TARGET:.0f}/s")
    for col in columns:
        table.add_column(col, justify="left" if col == "phase" else "right")
    for p in phases:
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "-"}[p.get("passed")]
        table.add_row(p["phase"], f"{p['evaluations_at_start']:,}", f"{p['candidates_evaluated']:,}",
                      f"{p['proposals']:,}", f"{p['seconds']:.2f}", f"{p['candidates_per_s']:,.0f}",
                      f"{p['cpu_candidates_per_s']:,.0f}", verdict)
    console.print(table)
    stages = Table(title="Where the time goes, measure phase (stages nest; share of the phase's wall time)")
    for col in ("stage", "calls", "seconds", "share", "us/call"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for stage, s in phases[-1]["stages"].items():
        per_call = f"{1e6 * s['seconds'] / s['calls']:.0f}" if s["calls"] else ""
        stages.add_row(stage, f"{s['calls']:,}", f"{s['seconds']:.2f}", f"{s['share']:.0%}", per_call)
    console.print(stages)
    g = phases[-1]["garbage_collection"]
    console.print(f"garbage collection (inside the stages above): {g['seconds']:.2f} s, {g['us_per_candidate']:.0f} us a "
                  f"candidate; collections by generation {g['collections']}, the longest {g['longest_ms']:.0f} ms")


def parse_weights(text: str) -> dict[str, float]:
    """`constants=1,params=0.5` -> {"constants": 1.0, "params": 0.5}."""
    try:
        return {name.strip(): float(w) for name, w in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT[,NAME=WEIGHT...], got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="engine_overhead.py",
        description="Candidates per second of the engine's own bookkeeping, with an instant synthetic "
                    f"evaluator, on {TASK}: phase 1 fills an empty store to --fill evaluations, phase 2 "
                    f"runs --measure more on the full store (the target, {TARGET:.0f}/s, applies to phase 2 "
                    f"once --fill >= {TARGET_STORE:,}).",
        epilog="Exit status 1 when a run of full size misses the target.",
    )
    parser.add_argument("--fill", type=int, default=TARGET_STORE, metavar="N",
                        help="evaluations of phase 1, from an empty store; the seed counts (default 10000)")
    parser.add_argument("--measure", type=int, default=5_000, metavar="M",
                        help="evaluations of phase 2, with N already stored (default 5000)")
    parser.add_argument("--workers", type=int, default=4, help="evaluation coroutines (default 4)")
    parser.add_argument("--operators", type=parse_weights, default=None, metavar="NAME=W,...",
                        help="operator weights, e.g. constants=1 (default: evo's default non-LLM mix)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine_overhead.json",
                        help="JSON report (default benchmarks/results/engine_overhead.json)")
    parser.add_argument("--proposal-processes", type=int, choices=(0, 1), default=None,
                        help="1: operators and embedder in a proposal process beside the loop; 0: in the "
                             "loop (default: evo's default, 0)")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke run: --fill 500 --measure 500, no pass/fail verdict")
    args = parser.parse_args(argv)
    if args.quick:
        args.fill, args.measure = 500, 500
    console = Console(width=max(Console().width, 110))
    extra: dict[str, Any] = {} if args.operators is None else {"operators": args.operators}
    if args.proposal_processes is not None:
        extra["proposal_processes"] = args.proposal_processes
    config = RunConfig(task=TASK, budget=args.fill, workers=args.workers, **extra)
    with tempfile.TemporaryDirectory(prefix="evo-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        console.print(f"phase 1: an empty store to {args.fill:,} evaluations ...")
        fill = run_phase("fill", lambda: Engine.create(run_dir, config, InstantEvaluator(args.workers)))
        console.print(f"phase 2: {args.measure:,} more with {args.fill:,} stored ...")
        budget = args.fill + args.measure
        measure = run_phase("measure", lambda: Engine.open(run_dir, {"budget": budget},
                                                           InstantEvaluator(args.workers)))
    if not args.quick and args.fill >= TARGET_STORE:
        measure["passed"] = measure["candidates_per_s"] >= TARGET
    print_tables([fill, measure], console)
    console.print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine slows "
                  "every figure here; compare runs made in a quiet moment)")
    report = {
        "benchmark": "engine_overhead",
        "task": TASK,
        "fill": args.fill,
        "measure": args.measure,
        "workers": args.workers,
        "operators": config.operators,
        "proposal_processes": config.proposal_processes,
        "target_per_s": TARGET,
        "passed": measure.get("passed"),  # None: --quick or a store smaller than the target's
        "phases": [fill, measure],
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
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
