"""One suite search against the same evaluations spent on its tasks separately (issue 17), on one GPU.

Two arms run at once on the same machine, with the same non-LLM operators as benchmarks/kernel_search.py:

- separate: one `evo run kernels/T` per task, with TOTAL / N evaluations each (the remainder to the first ones)
  and `--workers-per-task` candidates in flight each;
- suite: one `evo run --suite T1,...,TN` with TOTAL evaluations spent by its task bandit and N x
  `--workers-per-task` in flight, plus the suite's transfer (related tasks' elites for the transplant operator,
  weight `--transplant`; the LLM operators are off here, so no prompt shows them).

Every evo process on a machine times its candidates under one GPU lock per device (evo/eval/gpu_lock.py), so
the two arms never time at the same moment: each candidate's time is measured alone, whatever the other arm
does. Both arms compile on the same CPUs at the same time. Each arm stops proposing at --time-limit; the
script interrupts what is still running at --wall-limit (a clean stop: evaluations in flight are recorded) so
that the call fits one device command. The table says how many evaluations each arm finished: the comparison
is at equal evaluations only where both spent TOTAL.

    python3 benchmarks/suite_search.py --total-evals 240 --time-limit 400 --wall-limit 520 \\
        --json benchmarks/results/suite_search.json
    python3 benchmarks/suite_search.py --arm separate --runs runs/ss ...; \\
        python3 benchmarks/suite_search.py --arm suite --runs runs/ss ...    # each arm alone, one call each

Both arms at once are 13 evo processes on one GPU (12 tasks): on the H100 that was too many for one call of 10
minutes (BENCHMARKS.md, session 8).

Prints a table (task, seed score, best separate, best suite, transfer-credited admissions) and both arms' mean
best over the tasks (a task without a valid best counts its seed), and writes the JSON (--json). The engine
needs faiss, pyribs, scikit-learn, deap and httpx2 in the interpreter that runs this: checked first, in
seconds, with a message that names what is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.checkout_env import checkout_env  # noqa: E402
from evo.run_group import RunGroup  # noqa: E402

# Row-wise kernels compile and time quickly; in pairs (or more) that declare the same tunable parameters, so
# that transfer has somewhere to go.
DEFAULT_TASKS = ("rmsnorm_fwd,layernorm_fwd,add_rmsnorm,add_layernorm,silu_fwd,gelu_tanh_fwd,cross_entropy_fwd,"
                 "logsumexp_rows,quant_int8_per_token,quant_fp8_per_token,softmax_fwd,cumsum_rows")
OPERATORS = """lessons_every = 0
retime_on_resume = false
[operators]
params = 4.0
params_crossover = 1.0
constants = 1.0
crossover = 0.5
"""
NEEDED = ("faiss", "ribs", "sklearn", "deap", "httpx2", "torch", "triton", "pydantic")


def preflight() -> None:
    """Fail in seconds, naming what is missing, rather than after the arms started."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"suite_search: this interpreter ({sys.executable}) lacks {', '.join(missing)}, which evo's engine "
                 "imports (faiss: novelty; ribs (pyribs): the archive; sklearn: the embedder; deap: the params "
                 "operators; httpx2: the LLM client). Install them first, e.g. from wheels carried to the machine: "
                 "`pip install --no-index --find-links WHEELS faiss-cpu pyribs scikit-learn deap httpx2`.")
    check = subprocess.run([sys.executable, "-c", "import evo.engine, evo.suite.loop"], capture_output=True,
                           text=True, cwd=REPO, env=checkout_env(), timeout=300)
    if check.returncode != 0:
        sys.exit(f"suite_search: evo's engine does not import here:\n{check.stderr[-2000:]}")


def task_names(spec: str) -> list[str]:
    return [t if "/" in t else f"kernels/{t}" for t in (s.strip() for s in spec.split(",")) if t]


def arm_rows(runs: Path, tasks: list[str]) -> dict[str, dict[str, Any]]:
    """Per task, from the stores of both arms: evaluations, seed and best score, transfer credit (suite)."""
    from evo.store import Store
    from evo.store.transfer import transfer_credit
    from evo.suite import member_dir

    def read(run_dir: Path) -> dict[str, Any]:
        if not (run_dir / "evo.db").is_file():
            return {"evaluations": 0, "seed": None, "best": None, "best_operator": None, "credit": None}
        store = Store.in_dir(run_dir, readonly=True)
        try:
            seeds = [store.get_program(pid).score for pid in store.valid_ids("seed")]
            best = store.best_programs(1)
            credit = transfer_credit(store)
            return {"evaluations": store.count_evaluations(), "seed": max(seeds) if seeds else None,
                    "best": best[0].score if best else None, "best_operator": best[0].operator if best else None,
                    "credit": {"admitted": credit.admitted, "admitted_transfer": credit.admitted_transfer,
                               "improvements": credit.improvements,
                               "improvements_transfer": credit.improvements_transfer, "share": credit.share}}
        finally:
            store.close()

    return {t: {"separate": read(runs / "separate" / t.replace("/", "__")),
                "suite": read(member_dir(runs / "suite", t))} for t in tasks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated kernel tasks (bare names are kernels/...)")
    ap.add_argument("--total-evals", type=int, default=240, help="evaluations of each arm, seeds included")
    ap.add_argument("--workers-per-task", type=int, default=2, help="candidates in flight per task")
    ap.add_argument("--transplant", type=float, default=1.0, help="the suite's transplant operator weight")
    ap.add_argument("--time-limit", type=float, default=400.0, help="seconds after which each arm stops proposing")
    ap.add_argument("--wall-limit", type=float, default=520.0, help="seconds after which what runs is interrupted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "suite_search")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "suite_search.json")
    ap.add_argument("--arm", choices=("both", "separate", "suite"), default="both",
                    help="run one arm only, into the same --runs as the other (two device calls of ~8 minutes "
                         "on a warm machine, each arm alone on the GPU); the table reads whatever both left")
    args = ap.parse_args()
    tasks = task_names(args.tasks)
    if len(tasks) < 2:
        sys.exit("suite_search: --tasks needs at least two tasks")
    if args.total_evals < 2 * len(tasks):
        sys.exit(f"suite_search: --total-evals {args.total_evals} leaves under 2 evaluations per task; give at "
                 f"least {2 * len(tasks)}")
    preflight()
    arms = ("separate", "suite") if args.arm == "both" else (args.arm,)
    taken = [a for a in arms if (args.runs / a).exists()]
    if taken:
        sys.exit(f"suite_search: {args.runs / taken[0]} exists; give a new --runs (each arm needs a fresh run "
                 "directory)")
    args.runs.mkdir(parents=True, exist_ok=True)
    if "separate" in arms:
        (args.runs / "separate").mkdir()
    base = f"seed = {args.seed}\n" + OPERATORS
    separate_cfg, suite_cfg = args.runs / "separate.toml", args.runs / "suite.toml"
    separate_cfg.write_text(f"workers = {args.workers_per_task}\n" + base)
    suite_cfg.write_text(f"workers = {args.workers_per_task * len(tasks)}\n" + base + f"transplant = {args.transplant}\n")

    started = time.monotonic()
    group = RunGroup(cwd=REPO)
    share, extra = divmod(args.total_evals, len(tasks))
    for i, task in enumerate(tasks if "separate" in arms else []):
        budget = share + (1 if i < extra else 0)
        group.start(f"separate-{task}", ["run", task, "--run-dir", str(args.runs / "separate" / task.replace("/", "__")),
                                         "--budget", str(budget), "--config", str(separate_cfg), "--time-limit",
                                         str(args.time_limit), "--quiet"],
                    args.runs / f"separate-{task.replace('/', '__')}.log")
    if "suite" in arms:
        group.start("suite", ["run", "--suite", ",".join(tasks), "--run-dir", str(args.runs / "suite"), "--budget",
                              str(args.total_evals), "--config", str(suite_cfg), "--time-limit", str(args.time_limit),
                              "--quiet"], args.runs / "suite.log")
    group.wait(args.wall_limit, grace_s=15.0)
    interrupted = group.interrupted
    wall = time.monotonic() - started
    failed = sorted(group.failed())

    rows = arm_rows(args.runs, tasks)
    table = []
    for task, r in rows.items():
        sep, sui = r["separate"], r["suite"]
        seed = sep["seed"] if sep["seed"] is not None else sui["seed"]
        table.append({"task": task, "seed": seed, "best_separate": sep["best"] if sep["best"] is not None else seed,
                      "best_suite": sui["best"] if sui["best"] is not None else seed,
                      "evals_separate": sep["evaluations"], "evals_suite": sui["evaluations"],
                      "transfer_admissions": (sui["credit"] or {}).get("admitted_transfer", 0),
                      "transfer_share": (sui["credit"] or {}).get("share"), "suite_best_operator": sui["best_operator"],
                      "separate_best_operator": sep["best_operator"]})

    def mean(key: str) -> float | None:
        values = [r[key] for r in table if r[key] is not None]
        return sum(values) / len(values) if values else None

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    print(f"\n{'task':28s} {'seed':>6s} {'separate':>8s} {'suite':>6s} {'evals sep/suite':>15s} {'transfer adm.':>13s}")
    for r in table:
        print(f"{r['task']:28s} {fmt(r['seed']):>6s} {fmt(r['best_separate']):>8s} {fmt(r['best_suite']):>6s} "
              f"{r['evals_separate']:>7d}/{r['evals_suite']:<7d} {r['transfer_admissions']:>13d}")
    n_sep, n_suite = sum(r["evals_separate"] for r in table), sum(r["evals_suite"] for r in table)
    print(f"{'mean':28s} {fmt(mean('seed')):>6s} {fmt(mean('best_separate')):>8s} {fmt(mean('best_suite')):>6s} "
          f"{n_sep:>7d}/{n_suite:<7d} {sum(r['transfer_admissions'] for r in table):>13d}")
    equal = n_sep == n_suite == args.total_evals
    why = "an arm stopped at its time limit" if min(n_sep, n_suite) else "an arm has not run yet (--arm)"
    print(f"suite mean best {fmt(mean('best_suite'))} against separate {fmt(mean('best_separate'))} "
          f"(seeds {fmt(mean('seed'))}); evaluations {n_sep} separate, {n_suite} suite"
          f"{'' if equal else ' (NOT equal: ' + why + ')'}; wall {wall:.0f} s"
          f"{'; stopped early (--wall-limit or a signal)' if interrupted else ''}")
    if failed:
        print(f"failed: {failed}: see the logs in {args.runs}")
    device = None
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - the figure is still worth writing without the device's name
        pass
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "rows": table, "suite_mean_best": mean("best_suite"), "separate_mean_best": mean("best_separate"),
        "seed_mean": mean("seed"), "evaluations": {"separate": n_sep, "suite": n_suite}, "equal_evaluations": equal,
        "wall_s": wall, "interrupted": interrupted, "failed": [str(f) for f in failed], "device": device,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "operators": "non-LLM: params 4, params_crossover 1, constants 1, crossover 0.5; suite adds transplant",
        "per_arm": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
