"""How many evaluation slots the engine keeps busy: the Ray backend against the local one, simulated.

Each evaluation is a sleep of `--eval-s` seconds (no candidate runs): on Ray, async actors with many slots
each (`EvalActor` of kind "simulated", so 1,000 slots fit on one small machine); locally, the same sleep in the engine's
own event loop (the best a local backend could do). The engine runs as in a search (the non-LLM operators,
screen, store, admission), with `workers` = slots and a budget of one seed plus `--rounds` x slots.

Measured over the steady window, from the first evaluation after the seed to the start of the last one:
- utilisation: the share of slot-time spent evaluating (sleeping) — the target is >= 95% at 1,000 slots;
- overhead / evaluation: slot-time not spent evaluating, per evaluation (the engine's own work plus the
  backend's round trip) — the target is <= 20 ms;
- engine idle: slot-time during which the engine had no job out at the backend, per evaluation;
- backend round trip: the time per evaluation beyond the sleep from the engine's side (Ray's RPCs; for the
  local baseline, how late the engine's own loop wakes up: its lag under load);
- engine CPU: the CPU time of the engine's process (every thread: Ray's driver threads too) per evaluation.

    python benchmarks/scale.py                       # 2, 10, 100, 1000 slots; 10 s evaluations; local and ray
    python benchmarks/scale.py --slots 100 --eval-s 2 --backends ray

Prints a table and writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from evo.config import RunConfig
from evo.engine import Engine
from evo.eval.backends.base import EvalResult
from evo.eval.backends.ray import simulated_result
from evo.program import Program
from evo.task import Task, load_task

TASK = "math/circle_packing_26"
OPERATORS = {"params": 1.0, "constants": 1.0}


class SleepingLocal:
    """The local baseline: every evaluation a sleep in the engine's own loop, `workers` at once."""

    def __init__(self, task: Task, workers: int, seconds: float):
        self.workers = workers
        self.seconds = seconds
        self.ranges = [(d.low, d.high) for d in task.config.descriptors]

    async def evaluate(self, program: Program) -> EvalResult:
        await asyncio.sleep(self.seconds)
        return simulated_result(program.source, self.seconds, self.ranges)

    def close(self) -> None:
        pass


class Clocked:
    """Wraps a backend and notes when each evaluation went out and came back (the driver's clock)."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.workers = backend.workers
        self.spans: list[tuple[float, float]] = []

    async def evaluate(self, program: Program) -> EvalResult:
        start = time.monotonic()
        result = await self.backend.evaluate(program)
        self.spans.append((start, time.monotonic()))
        return result

    def close(self) -> None:
        self.backend.close()


def measure(backend_name: str, slots: int, seconds: float, rounds: int, scratch: Path) -> dict[str, Any]:
    task = load_task(TASK)
    if backend_name == "ray":
        from evo.eval.backends.ray import RayEvaluator

        backend: Any = RayEvaluator(task, slots, scratch / "ray", kind="simulated",
                                    slots_per_actor=min(slots, 250),
                                    actor_options={"seconds": seconds,
                                                   "descriptor_ranges": [(d.low, d.high) for d in
                                                                         task.config.descriptors]})
    else:
        backend = SleepingLocal(task, slots, seconds)
    clocked = Clocked(backend)
    budget = 1 + rounds * slots
    config = RunConfig(task=TASK, budget=budget, workers=slots, seed=0, operators=OPERATORS)
    engine = Engine.create(scratch / f"run-{backend_name}-{slots}", config, evaluator=clocked)
    started, cpu = time.monotonic(), time.process_time()
    stats = engine.run()
    wall, cpu = time.monotonic() - started, time.process_time() - cpu
    assert stats.done == budget, f"the budget is {budget}, the run made {stats.done}"
    # The seed runs alone, then the first wave fills the slots as fast as children are made (a ramp paid once
    # a run): the steady window opens when the last slot first fills and closes when the last evaluation starts
    # (after that the budget is spent and slots empty by design).
    spans = sorted(clocked.spans)[1:]
    t0, t1 = spans[slots - 1][0], spans[-1][0]
    window = t1 - t0
    inside = [(max(a, t0), min(b, t1)) for a, b in spans if a < t1 and b > t0]
    out_at_backend = sum(b - a for a, b in inside)
    # the sleep itself: the span's last `seconds` (its start holds the trip out), clipped to the window
    evaluating = sum(max(0.0, min(b, t1) - max(b - seconds, t0)) for a, b in spans if a < t1 and b > t0)
    n = sum(1 for a, _ in spans if t0 <= a < t1) or 1
    slot_time = slots * window
    return {"backend": backend_name, "slots": slots, "eval_s": seconds, "evaluations": budget,
            "wall_s": round(wall, 2), "window_s": round(window, 2),
            "utilisation": round(evaluating / slot_time, 4),
            "overhead_ms_per_eval": round(1000 * (slot_time - evaluating) / n, 2),
            "engine_idle_ms_per_eval": round(1000 * (slot_time - out_at_backend) / n, 2),
            "engine_cpu_ms_per_eval": round(1000 * cpu / budget, 2),
            "backend_round_trip_ms": round(1000 * (sum(b - a for a, b in spans) / len(spans) - seconds), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[2, 10, 100, 1000])
    parser.add_argument("--eval-s", type=float, default=10.0, help="seconds of one simulated evaluation")
    parser.add_argument("--rounds", type=int, default=3, help="evaluations per slot after the seed")
    parser.add_argument("--backends", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="evo-scale-") as tmp:
        if "ray" in args.backends:
            from evo.eval.backends.ray import connect

            connect()  # one Ray for every measurement (a local one unless $RAY_ADDRESS names a cluster)
        try:
            for slots in args.slots:
                for backend in args.backends:
                    row = measure(backend, slots, args.eval_s, args.rounds, Path(tmp))
                    rows.append(row)
                    print(f"{backend:>5} {slots:>5} slots: utilisation {row['utilisation']:.1%}, overhead "
                          f"{row['overhead_ms_per_eval']:.1f} ms/eval (engine idle {row['engine_idle_ms_per_eval']:.1f}"
                          f", backend round trip {row['backend_round_trip_ms']:.1f}), engine CPU "
                          f"{row['engine_cpu_ms_per_eval']:.1f} ms/eval, wall {row['wall_s']:.0f} s",
                          flush=True)
        finally:
            if "ray" in args.backends:
                from evo.eval.backends.ray import disconnect

                disconnect()
    print()
    print("| backend | slots | evaluations | utilisation | overhead ms/eval | engine idle ms/eval "
          "| backend round trip ms | engine CPU ms/eval |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['backend']} | {r['slots']} | {r['evaluations']} | {r['utilisation']:.1%} | "
              f"{r['overhead_ms_per_eval']:.1f} | {r['engine_idle_ms_per_eval']:.1f} | {r['backend_round_trip_ms']:.1f} "
              f"| {r['engine_cpu_ms_per_eval']:.1f} |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "commit": commit,
                                     "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
                                     "eval_s": args.eval_s, "rounds": args.rounds, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
