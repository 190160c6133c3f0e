"""KernelBench-format problems of our own, imported with `evo tasks import kernelbench`, then a short search on
each with the non-LLM operators: the seeds' scores before, the best after.

The problems (benchmarks/kernelbench_problems/*.py, written for evo: none is a built-in task) are imported by
the real importer into RUNS/tasks (found by name through EVO_TASKS_PATH). Each task then gets its own `evo run`
with two seeds: the imported one (the problem's own PyTorch code behind evo's interface) and a plain Triton
kernel of ours (benchmarks/kernelbench_problems/triton/<task>.py) whose tile sizes and warps the `params`
operator tunes. The runs go at once, sharing the GPU's timing lock (no two candidates are timed together).
Prints a table and writes JSON.

    python3 benchmarks/imported_search.py --time-limit 240   # on a GPU: about 5 to 5.5 minutes in all
    python3 benchmarks/imported_search.py --dry-run          # on CPU (Triton's interpreter): the plumbing only

Afterwards `EVO_TASKS_PATH=RUNS/tasks evo report RUNS/<task>` shows a run, the seeds' provenance included.
"""

from __future__ import annotations

import argparse
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
from evo.store import DB_NAME, Store  # noqa: E402
from evo.tasks_import.common import task_name  # noqa: E402

PROBLEMS = REPO / "benchmarks" / "kernelbench_problems"

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


def problem_files(folder: Path, only: list[str] | None = None) -> dict[str, Path]:
    """{task name: problem file} of the KernelBench-format problems in `folder` (those named in `only`)."""
    found = {task_name(p.stem): p for p in sorted(folder.glob("*.py"))}
    if only:
        unknown = [n for n in only if n not in found]
        if unknown:
            raise SystemExit(f"no problem named {', '.join(unknown)} in {folder}; there are: {', '.join(found)}")
        found = {n: found[n] for n in only}
    if not found:
        raise SystemExit(f"no KernelBench problem file (*.py) in {folder}")
    return found


def import_problems(files: dict[str, Path], out: Path, env: dict[str, str]) -> float:
    """Import every problem with the real importer (`evo tasks import kernelbench`) into `out`, all at once (each
    calibrates and checks its seed on CPU); seconds taken."""
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    procs = {path: subprocess.Popen([sys.executable, "-m", "evo", "tasks", "import", "kernelbench", str(path),
                                     "--out", str(out), "--force"], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for path in files.values()}
    for path, proc in procs.items():
        said, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"importing {path.name} failed:\n{said[-3000:]}")
    return time.time() - start


def summarise(run_dir: Path, name: str) -> dict[str, Any]:
    """The run's seeds' scores (the imported one, ours), its best, and its counts, read from its store."""
    store = Store.in_dir(run_dir, readonly=True)
    try:
        evaluations = list(store.iter_evaluations())
        outside = store.provenance()
        torch_seed = triton_seed = None
        for e in evaluations:
            p = store.get_program(e.program_id)
            if p.operator != "seed" or e.score is None:
                continue
            if p.id in outside:
                triton_seed = e.score if triton_seed is None else max(triton_seed, e.score)
            else:
                torch_seed = e.score if torch_seed is None else max(torch_seed, e.score)
        best = store.best_programs(1)
        row = {"task": name, "evaluations": len(evaluations), "valid": sum(e.score is not None for e in evaluations),
               "torch_seed": torch_seed, "triton_seed": triton_seed,
               "seed": max((s for s in (torch_seed, triton_seed) if s is not None), default=None),
               "best": best[0].score if best else None, "best_operator": best[0].operator if best else None,
               "best_id": best[0].id if best else None}
        if best:
            (run_dir.parent / f"{name}.best.py").write_text(best[0].text)
        return row
    finally:
        store.close()


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table: problem, seeds' scores, best, evaluations."""
    lines = [f"{'problem':24s} {'torch seed':>10s} {'triton seed':>11s} {'best':>7s} {'by':>16s} {'evals':>5s} "
             f"{'valid':>5s}"]
    for r in rows:
        lines.append(f"{r['task']:24s} {_fmt(r['torch_seed']):>10s} {_fmt(r['triton_seed']):>11s} "
                     f"{_fmt(r['best']):>7s} {str(r['best_operator'] or '-'):>16s} {r['evaluations']:5d} "
                     f"{r['valid']:5d}")
    return "\n".join(lines)


def _device() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (Triton's interpreter)"
    except Exception as e:  # noqa: BLE001 - the device name is a label; a broken driver shows in the runs
        return f"unknown ({e})"


def _commit() -> str | None:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Import, search, summarise; returns what it wrote to --json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--problems", type=Path, default=PROBLEMS, help="folder of KernelBench-format problem files "
                    "(with triton/<task>.py seeds beside them; a problem without one gets only its imported seed)")
    ap.add_argument("--only", help="comma-separated task names to run (default: every problem)")
    ap.add_argument("--time-limit", type=float, default=240.0,
                    help="seconds of search per task; the tasks run at once, so this bounds the whole search "
                         "(add ~20 s of import and ~40 s of start and stop)")
    ap.add_argument("--budget", type=int, default=400, help="evaluations per task at most")
    ap.add_argument("--workers", type=int, default=4, help="candidates in flight per task")
    ap.add_argument("--runs", type=Path, help="folder for the runs and the imported tasks "
                    "(default: runs/imported_search-<date-time>)")
    ap.add_argument("--json", type=Path, help="results file (default: benchmarks/results/imported_search.json; "
                    "with --dry-run, RUNS/imported_search.json)")
    ap.add_argument("--dry-run", action="store_true", help="CPU with Triton's interpreter: a budget of 3 per task "
                    "(the two seeds and one child), 1 worker; checks the plumbing, measures nothing")
    args = ap.parse_args(argv)

    runs = args.runs or REPO / "runs" / f"imported_search-{time.strftime('%Y%m%d-%H%M%S')}"
    if runs.exists() and any(runs.iterdir()):
        raise SystemExit(f"{runs} is not empty: give a new --runs folder")
    files = problem_files(args.problems, args.only.split(",") if args.only else None)
    tasks = runs / "tasks"
    env = checkout_env(EVO_TASKS_PATH=str(tasks))
    budget, workers = args.budget, args.workers
    if args.dry_run:
        env["TRITON_INTERPRET"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""  # the plumbing on CPU even where a GPU is
        budget, workers = min(budget, 3), 1
    import_s = import_problems(files, tasks, env)
    print(f"imported {len(files)} problems into {tasks} in {import_s:.0f} s", flush=True)

    config = runs / "search.toml"
    config.write_text(CONFIG.format(budget=budget, workers=workers))
    group = RunGroup(env)
    start = time.time()
    for name, path in files.items():
        cmd = ["run", name, "--run-dir", str(runs / name), "--config", str(config),
               "--time-limit", str(args.time_limit), "--quiet"]
        ours = path.parent / "triton" / f"{name}.py"
        if ours.is_file():
            cmd += ["--seed-from", str(ours)]
        group.start(name, cmd, runs / f"{name}.log")
    group.wait(args.time_limit + 120.0)
    procs = group.procs
    wall = time.time() - start
    failed = group.failed()

    rows = [summarise(runs / name, name) for name in procs if (runs / name / DB_NAME).is_file()]
    print()
    print(table(rows))
    total = sum(r["evaluations"] for r in rows)
    print(f"{total} evaluations in {wall:.0f} s of search ({total / max(wall, 1e-9) * 60:.1f} a minute), "
          f"after {import_s:.0f} s of import; device: {_device()}")
    for name, rc in failed.items():
        print(f"{name}: evo run exited {rc}; see {runs / (name + '.log')}")
    result = {"rows": rows, "wall_s": wall, "import_s": import_s, "time_limit_s": args.time_limit, "budget": budget,
              "workers": workers, "dry_run": args.dry_run, "device": _device(), "commit": _commit(),
              "runs": str(runs), "failed": failed, "interrupted": group.interrupted}
    out = args.json or (runs / "imported_search.json" if args.dry_run else
                        REPO / "benchmarks" / "results" / "imported_search.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    if failed:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
