"""A search on several kernel tasks at once with the non-LLM operators: seed score before, best after.

Each task gets its own `evo run` (its own worker, children compiling in parallel); all runs share the
GPU's timing lock, so no two candidates are timed at once. Prints a table and writes JSON.

    python benchmarks/kernel_search.py --tasks gemm_bias_relu,embedding_lookup --time-limit 240
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.run_group import RunGroup  # noqa: E402
from evo.store import DB_NAME, Store  # noqa: E402

CONFIG = """
budget = {budget}
workers = {workers}
islands = 2
[operators]
params = 4.0
params_crossover = 1.0
constants = 1.0
crossover = 0.5
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="gemm_bias_relu,gemm_bias_gelu,attn_out_proj_residual,embedding_lookup,"
                    "causal_prefill_attention")
    ap.add_argument("--time-limit", type=float, default=240.0, help="seconds of search per task (runs in parallel)")
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--workers", type=int, default=4, help="candidates in flight per task")
    ap.add_argument("--wall-limit", type=float, default=None,
                    help="seconds after which runs still going are stopped cleanly (their evaluations kept) and the "
                         "table written; Ctrl-C or SIGTERM does the same (default: --time-limit + 120)")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "kernel_search")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "kernel_search.json")
    args = ap.parse_args()
    if args.wall_limit is None:
        args.wall_limit = args.time_limit + 120.0

    args.runs.mkdir(parents=True, exist_ok=True)
    config = args.runs / "search.toml"
    config.write_text(CONFIG.format(budget=args.budget, workers=args.workers))
    group = RunGroup()
    start = time.time()
    for name in args.tasks.split(","):
        group.start(name, ["run", f"kernels/{name}", "--run-dir", str(args.runs / name), "--config", str(config),
                           "--time-limit", str(args.time_limit), "--quiet"], args.runs / f"{name}.log")
    group.wait(args.wall_limit)
    procs = group.procs
    wall = time.time() - start

    rows = []
    for name in procs:
        if not (args.runs / name / DB_NAME).is_file():  # the run failed before its store: its log says why
            rows.append({"task": name, "evaluations": 0, "valid": 0, "seed": None, "best": None,
                         "best_operator": None, "best_id": None})
            continue
        store = Store.in_dir(args.runs / name, readonly=True)
        evaluations = list(store.iter_evaluations())
        seed_scores = [e.score for e in evaluations
                       if e.score is not None and store.get_program(e.program_id).operator == "seed"]
        best = store.best_programs(1)
        ok = sum(1 for e in evaluations if e.score is not None)
        rows.append({"task": name, "evaluations": len(evaluations), "valid": ok,
                     "seed": max(seed_scores) if seed_scores else None,
                     "best": best[0].score if best else None, "best_operator": best[0].operator if best else None,
                     "best_id": best[0].id if best else None})
        if best:
            (args.runs / f"{name}.best.py").write_text(best[0].text)
    print(f"\n{'task':28s} {'evals':>5s} {'valid':>5s} {'seed':>7s} {'best':>7s}")
    for r in rows:
        seed = f"{r['seed']:.3f}" if r["seed"] is not None else "-"
        best = f"{r['best']:.3f}" if r["best"] is not None else "-"
        print(f"{r['task']:28s} {r['evaluations']:5d} {r['valid']:5d} {seed:>7s} {best:>7s}")
    total = sum(r["evaluations"] for r in rows)
    print(f"{total} evaluations in {wall:.0f} s: {total / wall * 60:.1f} per minute on the GPU(s)"
          f"{'; stopped early (--wall-limit or a signal)' if group.interrupted else ''}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "wall_s": wall, "time_limit_s": args.time_limit,
                                            "interrupted": group.interrupted, "failed": group.failed()}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
