"""The GPU figures of the training tasks (issue 14), in calls that each fit a lent GPU's 10-minute limit.

Every subcommand adds to one JSON file (--json, default benchmarks/results/training_gpu.json; copied to $OUT
after every finished run), so figures accumulate across calls and sessions. A run already in the file (same
seed file, RNG seed, budget, device and data) is never run again; a call stops before --max-wall-s rather than
start a run it cannot finish, and says what is left. Call it again until it says nothing is left.

    seeds   --budget-s 120 --seeds 0,1,2 --which weak,strong   validation bpb of both lm_budget seeds
    search  --budget-s 60 --evals 20                            `evo run` / `evo resume` with the non-LLM operators
    ttt     --target-from weak                                  the time-to-target seed against the weak 120 s bpb
    table                                                       the markdown tables for BENCHMARKS.md
    set-target                                                  the measured target into time_to_target's task.toml
    pack-data                                                   data/small-bytes as data/small-bytes.tar.gz

Every run goes through the evaluation pipeline (screen, the training harness and its trusted scorer, the full
audit), exactly as `evo eval` and `evo run` do. Runs are serial: the budget is wall-clock time measured from
outside, so two trainings sharing one GPU would each get part of it (CUDA time-slices processes) and see fewer
tokens; the bpb would change with the other run's load, not with the recipe.

On a lent GPU (python 3.12, torch 2.11, scipy; no pydantic, faiss, pyribs, deap or httpx2), carry one folder
of wheels and the packed data, which is unpacked and checked against its manifest's sha256 on first use. Here,
once (the wheels: pydantic's, and what `evo run` needs beyond the GPU's packages; one version of each):

    evo data prepare --size small && python3 benchmarks/training_gpu.py pack-data   # 44 MB -> 16 MB archive
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d runs/whl-training \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 \
        faiss-cpu==1.15.1 ribs==0.12.0 numpy_groupies==0.16.0 array_api_compat==1.16.0 deap==1.4.4 \
        moocore==0.3.2 cffi==2.1.1 pycparser==3.12 platformdirs==4.14.9 httpx2==2.17.0 httpcore2==2.17.0 \
        truststore==0.10.5

Every call: carry runs/whl-training, data/small-bytes.tar.gz and runs/training_search.tar.gz (42 MB with the
repo), then

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        runs/whl-training/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 || exit;
    python3 benchmarks/training_gpu.py seeds --commit COMMIT      # or search, or ttt

and afterwards copy what came back from $OUT into place: training_gpu.json into benchmarks/results/, and
training_search.tar.gz into runs/. A call that finds the JSON without them runs them again.

A CPU try-out of the plumbing: --smoke --data DIR (the CPU smoke configuration on a small corpus).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.errors import EvoError  # noqa: E402

LM, TTT = REPO / "tasks" / "training" / "lm_budget", REPO / "tasks" / "training" / "time_to_target"
SEED_FILES = {"weak": LM / "seed.py", "strong": LM / "seeds" / "strong.py"}
SMOKE = {"device": "cpu", "eval_tokens": 4096, "rescore_batches": 1, "probe_trials": 2}
RESULTS = REPO / "benchmarks" / "results" / "training_gpu.json"
Record = dict[str, Any]


class Clock:
    """The call's wall-clock allowance: a run starts only when its estimate fits in what is left."""

    def __init__(self, max_wall_s: float):
        self.start, self.max_wall_s = time.monotonic(), max_wall_s

    def left(self) -> float:
        return self.max_wall_s - (time.monotonic() - self.start)


class Results:
    """The JSON file of finished runs, written whole (atomically) after each one and copied to `out`."""

    def __init__(self, path: Path, out: Path | None):
        self.path, self.out = path, out
        self.data: dict[str, Any] = {"version": 1, "runs": [], "calls": [], "search": None}
        if path.is_file():
            try:
                self.data.update(json.loads(path.read_text()))
            except json.JSONDecodeError as e:
                raise EvoError(f"{path} is not JSON ({e}): move it away to start a new file") from None

    @property
    def runs(self) -> list[Record]:
        return self.data["runs"]

    def find(self, key: tuple) -> Record | None:
        return next((r for r in self.runs if run_key(r) == key), None)

    def add(self, record: Record) -> None:
        self.data["runs"] = [r for r in self.runs if run_key(r) != run_key(record)] + [record]
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)
        export(self.path, self.out)


def export(path: Path, out: Path | None) -> None:
    """A copy in $OUT (what comes back from a lent machine), also when the call is cut off later."""
    if out is not None and path.is_file() and out.resolve() != path.parent.resolve():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / path.name)


def run_key(r: Record) -> tuple:
    """What makes two records the same run: a run with this key in the file is never run again."""
    return (r["kind"], r["which"], r["seed"], float(r["budget_s"]), r["device"], r["data"], r["source"])


def sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:12]


class Context:
    """Where and on what this call runs: the device's name, the data folder and its identity, the commit."""

    def __init__(self, args: argparse.Namespace):
        self.smoke, self.data = args.smoke, ensure_data(Path(args.data))
        self.data_id = sha((self.data / "manifest.json").read_bytes())
        self.device = "cpu (smoke)" if self.smoke else gpu_name()
        self.commit = args.commit or git_commit()
        self.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None

    def stamp(self) -> Record:
        from importlib.metadata import version

        return {"device": self.device, "data": self.data_id, "commit": self.commit, "torch": version("torch"),
                "python": sys.version.split()[0], "date": datetime.now(UTC).isoformat(timespec="seconds")}


def gpu_name() -> str:
    """The GPU's name, from a short child that also multiplies two matrices there: torch's CUDA libraries are then
    in the file cache, which the first training of a fresh machine would otherwise read out of its own budget
    (and a CUDA context in this process would hold GPU memory all call)."""
    code = ("import torch\nif torch.cuda.is_available():\n    x = torch.ones(512, 512, device='cuda')\n"
            "    print((x @ x).sum().item() and torch.cuda.get_device_name(0))")
    name = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    if not name:
        raise EvoError("no CUDA device here: these are GPU figures. For a CPU try-out of the plumbing, give "
                       "--smoke --data DIR (a small corpus)")
    return name


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown (give --commit)"


def ensure_data(data: Path) -> Path:
    """`data`, unpacked first from DATA.tar.gz beside it when only the archive came along, and then checked."""
    from evo.data.shards import load_manifest

    archive = data.with_name(data.name + ".tar.gz")
    if not (data / "manifest.json").is_file():
        if not archive.is_file():
            raise EvoError(f"no data at {data} (no manifest.json) and no {archive.name} beside it: build it with "
                           "`evo data prepare --size small`, then `pack-data` to carry it to a GPU")
        data.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(data.parent, filter="data")
        bad = load_manifest(data).verify()
        if bad:
            raise EvoError(f"{archive.name} unpacked to {data} does not match its manifest: {'; '.join(bad)[:300]}")
        print(f"data: unpacked {archive} to {data}; every shard matches its sha256", flush=True)
    return data.resolve()


def pipeline_record(result: Any, wall_s: float) -> Record:
    """What a run's `EvalResult` says, as JSON: the harness's own measures, the verdict, what failed."""
    from evo.eval.pipeline import verdict_of

    m, verdict = result.metrics, verdict_of(result)
    return {"ok": bool(result.ok), "val_bpb": m.get("val_bpb"), "val_loss": m.get("val_loss"),
            "train_s": m.get("train_s"), "params": m.get("params"), "tokens_seen": m.get("tokens_seen"),
            "audit_passed": bool(verdict and verdict.passed), "failure": result.failure,
            "error": (result.error or "")[:400] or None, "wall_s": round(wall_s, 1),
            "failed_checks": sorted({name for name, passed, _ in result.checks if not passed})}


def scratch_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="evo-training-gpu-"))
    os.chmod(folder, 0o755)  # the sandbox's uid walks through it to its own work dir
    return folder


def evaluate(task: str, source: str, ctx: Context, seed: int, budget_s: float) -> Record:
    """One training and scoring through the pipeline (full audit); for time_to_target one seed of its cascade:
    the same harness calls (`train_one`, `score_weights`) in the family's per-seed evaluator."""
    from evo.eval.pipeline import evaluate_source
    from evo.eval.training.harness import TrainingEvaluator
    from evo.eval.training.spec import resolve_spec
    from evo.task import load_task

    loaded, scratch = load_task(task), scratch_dir()
    options = {**(SMOKE if ctx.smoke else {}), "data": str(ctx.data), "seed": seed, "budget_s": budget_s}
    start = time.monotonic()
    try:
        spec = resolve_spec(loaded.root, **options)
        backend = TrainingEvaluator(spec, 1, scratch, tuple(d.name for d in loaded.config.descriptors))
        try:
            result = evaluate_source(loaded, source, backend=backend)
        finally:
            backend.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return pipeline_record(result, time.monotonic() - start)


def estimate(results: Results, ctx: Context, kind: str, budget_s: float) -> float:
    """Seconds one more run will take: the longest like it on this device so far, else the budget plus a margin."""
    seen = [r["wall_s"] for r in results.runs if r["kind"] == kind and r["device"] == ctx.device
            and (kind == "ttt" or float(r["budget_s"]) == budget_s)]
    return 1.1 * max(seen) if seen else budget_s + (40.0 if ctx.smoke else 75.0)


def parse_ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise EvoError(f"--seeds {text!r}: give RNG seeds as integers separated by commas, e.g. 0,1,2") from None


def run_list(results: Results, ctx: Context, clock: Clock, plan: list[tuple[Record, str, str]], retry: bool,
             kind: str, budget_s: float) -> tuple[int, int]:
    """Run each (record, task, source) of `plan` not yet in the file; (runs made, runs left)."""
    def pending(base: Record) -> bool:
        old = results.find(run_key(base))
        return old is None or (retry and not old["ok"])

    made = 0
    for i, (base, task, source) in enumerate(plan):
        if not pending(base):
            continue
        est = estimate(results, ctx, kind, budget_s)
        if clock.left() < est:
            left = sum(1 for b, _, _ in plan[i:] if pending(b))
            print(f"stopped: {clock.left():.0f} s left of --max-wall-s, a run takes about {est:.0f} s; "
                  f"{left} run(s) left: call again", flush=True)
            return made, left
        print(f"{kind} {base['which']} seed {base['seed']} at {budget_s:g} s on {ctx.device} ...", flush=True)
        record = {**base, **ctx.stamp(), **evaluate(task, source, ctx, base["seed"], budget_s)}
        results.add(record)
        made += 1
        print(f"  {'ok' if record['ok'] else 'FAILED ' + str(record['failure'])}: val_bpb {record['val_bpb']}, "
              f"train {record['train_s']} s, {record['wall_s']} s in all {record['error'] or ''}", flush=True)
    return made, 0


def cmd_seeds(args: argparse.Namespace, ctx: Context, results: Results, clock: Clock) -> tuple[int, int]:
    which = [w.strip() for w in args.which.split(",") if w.strip()]
    if not which or any(w not in SEED_FILES for w in which):
        raise EvoError(f"--which {args.which!r}: choose among {', '.join(SEED_FILES)} (comma separated)")
    plan = []
    for seed in parse_ints(args.seeds):  # seed-major: a call cut short leaves both seed files measured alike
        for w in which:
            text = SEED_FILES[w].read_text()
            base = {"kind": "seed", "which": w, "seed": seed, "budget_s": args.budget_s, "data": ctx.data_id,
                    "device": ctx.device, "source": sha(text)}
            plan.append((base, "training/lm_budget", text))
    return run_list(results, ctx, clock, plan, args.retry_failed, "seed", args.budget_s)


def weak_target(results: Results, budget_s: float, device: str | None = None,
                data: str | None = None) -> tuple[float, int, str]:
    """The weak seed's mean validation bpb at `budget_s`, over how many seeds, and on which device: on `device`
    and `data` when given, else on the device and data with the most such runs in the file."""
    runs = [r for r in results.runs if r["kind"] == "seed" and r["which"] == "weak" and r["ok"] and
            float(r["budget_s"]) == budget_s and device in (None, r["device"]) and data in (None, r["data"])]
    groups = Counter((r["device"], r["data"]) for r in runs)
    if groups:
        runs = [r for r in runs if (r["device"], r["data"]) == groups.most_common(1)[0][0]]
    if len(runs) < 2:
        raise EvoError(f"{len(runs)} finished weak-seed run(s) at {budget_s:g} s{' on ' + device if device else ''} "
                       f"in {results.path}: the target needs at least 2. Run `seeds --which weak` first, or give "
                       "--target-bpb")
    return statistics.fmean(r["val_bpb"] for r in runs), len(runs), runs[0]["device"]


def declared(text: str, name: str) -> re.Match[str]:
    """The `NAME = N` line of the time-to-target seed (N its group 1)."""
    found = re.search(rf"^{name} = (\d+)", text, re.M)
    if found is None:
        raise EvoError(f"{TTT / 'seed.py'} declares no `{name} = N` line")
    return found


def ttt_source(steps: int | None) -> tuple[str, int]:
    """The time-to-target seed, with its declared GPU schedule `STEPS` set to `steps` (its own when None)."""
    text = TTT.joinpath("seed.py").read_text()
    declared_steps = declared(text, "STEPS")
    if steps is None:
        return text, int(declared_steps.group(1))
    if not 1 <= steps <= 1_000_000:
        raise EvoError(f"--steps {steps}: give a positive number of optimiser steps")
    return text[:declared_steps.start(1)] + str(steps) + text[declared_steps.end(1):], steps


def auto_steps(results: Results, ctx: Context, budget_s: float, fraction: float) -> int | None:
    """`fraction` of the steps the strong lm_budget seed made in `budget_s` here (its tokens over one batch)."""
    runs = [r for r in results.runs if r["kind"] == "seed" and r["which"] == "strong" and r["ok"] and
            float(r["budget_s"]) == budget_s and r["device"] == ctx.device and r.get("tokens_seen")]
    if not runs or ctx.smoke:
        return None
    batch = int(declared(TTT.joinpath("seed.py").read_text(), "BATCH_SIZE").group(1))
    from evo.eval.training.spec import resolve_spec

    seq_len = resolve_spec(TTT, data=str(ctx.data), device="cuda").seq_len
    steps = statistics.fmean(r["tokens_seen"] for r in runs) / (batch * seq_len)
    return max(500, int(round(fraction * steps / 50.0)) * 50)


def cmd_ttt(args: argparse.Namespace, ctx: Context, results: Results, clock: Clock) -> tuple[int, int]:
    from evo.eval.training.target import decide, resolve_rule

    # A schedule measured before on this device and data goes on with its own target and STEPS (weak or strong
    # runs added since would otherwise move them and start all seeds again); --steps or --target-bpb start anew.
    before = [r for r in results.runs if r["kind"] == "ttt" and r["device"] == ctx.device and r["data"] == ctx.data_id]
    if args.target_bpb is not None:
        target, origin = args.target_bpb, "given by --target-bpb"
    elif before and args.steps is None:
        target, origin = before[-1]["target_bpb"], f"as recorded with {before[-1]['which']}"
    elif args.target_from == "weak":
        mean, n, _ = weak_target(results, args.target_budget_s, ctx.device, ctx.data_id)
        target, origin = round(mean, 4), f"the weak seed's mean over {n} seeds at {args.target_budget_s:g} s"
    else:
        raise EvoError(f"--target-from {args.target_from!r}: only `weak` is known (or give --target-bpb)")
    steps = args.steps
    if steps is None and before:
        steps = int(before[-1]["which"].removeprefix("steps="))
    elif steps is None:
        steps = auto_steps(results, ctx, args.target_budget_s, args.fraction)
        if steps is None and not ctx.smoke:
            print("no strong-seed runs in the file to size STEPS from: the seed's own STEPS (run `seeds` first to "
                  "size it to this GPU, or give --steps)", flush=True)
    source, steps = ttt_source(steps)
    rule = resolve_rule(TTT, "cpu" if ctx.smoke else "cuda")
    seeds = parse_ints(args.seeds) if args.seeds else list(range(rule.seeds))
    cap = args.cap_s or rule_cap(ctx)
    print(f"time to target: target {target:.4f} bpb ({origin}); STEPS = {steps}; seeds {seeds}; cap {cap:g} s",
          flush=True)

    def base(seed: int) -> Record:
        return {"kind": "ttt", "which": f"steps={steps}", "seed": seed, "budget_s": cap, "data": ctx.data_id,
                "device": ctx.device, "source": sha(source), "target_bpb": target}

    first = [(base(seeds[0]), "training/time_to_target", source)]
    made, left = run_list(results, ctx, clock, first, args.retry_failed, "ttt", cap)
    head = results.find(run_key(base(seeds[0])))
    if head is None:
        return made, left + len(seeds) - 1
    if not head["ok"] or head["val_bpb"] >= target:  # the task's cascade: the other seeds only below the target
        print(f"seed {seeds[0]} did not reach the target ({head['val_bpb']} bpb, {head['failure'] or 'above'}): "
              f"no further seed. Give more --steps (this was {steps}).", flush=True)
        return made, 0
    rest = [(base(s), "training/time_to_target", source) for s in seeds[1:]]
    more, left = run_list(results, ctx, clock, rest, args.retry_failed, "ttt", cap)
    runs = [results.find(run_key(base(s))) for s in seeds]
    if left == 0 and all(r is not None and r["ok"] for r in runs):
        d = decide([r["val_bpb"] for r in runs if r], target, rule.alpha)
        print(f"{d.reason}; time to target {statistics.fmean(r['train_s'] for r in runs if r):.1f} s", flush=True)
    return made + more, left


def rule_cap(ctx: Context) -> float:
    from evo.eval.training.spec import resolve_spec

    return resolve_spec(TTT, data=str(ctx.data), device="cpu" if ctx.smoke else "cuda").budget_s


def pack_data(args: argparse.Namespace) -> str:
    data = Path(args.data)
    if not (data / "manifest.json").is_file():
        raise EvoError(f"no data at {data}: build it with `evo data prepare --size small` first")
    archive = data.with_name(data.name + ".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data, arcname=data.name)
    return f"{archive}: {archive.stat().st_size / 1e6:.1f} MB (carry it instead of {data})"


def cmd_set_target(args: argparse.Namespace, results: Results) -> str:
    """The weak seed's measured mean as [training] target_bpb of the time_to_target task (its GPU target)."""
    from benchmarks.training_gpu_report import set_target

    mean, n, device = weak_target(results, args.target_budget_s, args.device)
    commits = sorted({r["commit"] for r in results.runs if r["kind"] == "seed" and r["device"] == device})
    line = (f"target_bpb = {mean:.4f}  # measured: the weak seed's mean over {n} seeds at {args.target_budget_s:g} s "
            f"on {device} (benchmarks/training_gpu.py, {datetime.now(UTC):%Y-%m-%d}, commit {', '.join(commits)})")
    try:
        set_target(Path(args.task_toml), line)
    except ValueError as e:
        raise EvoError(str(e)) from None
    return line


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, default=RESULTS, help="the results file (default %(default)s)")
    common.add_argument("--data", default=str(REPO / "data" / "small-bytes"), help="the data folder (`evo data "
                        "prepare --size small`); unpacked from DATA.tar.gz beside it when only that came along")
    common.add_argument("--max-wall-s", type=float, default=530.0, help="start no run that would end after this "
                        "many seconds of this call (default %(default)s: a lent GPU's call is at most 600 s)")
    common.add_argument("--commit", help="the commit to record (default: git's; a lent machine has no .git)")
    common.add_argument("--smoke", action="store_true", help="the CPU smoke configuration (a plumbing try-out)")
    common.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seeds", parents=[common], help="validation bpb of the lm_budget seeds over RNG seeds")
    s.add_argument("--budget-s", type=float, default=120.0)
    s.add_argument("--seeds", default="0,1,2", help="RNG seeds (default %(default)s)")
    s.add_argument("--which", default="weak,strong", help="weak (seed.py), strong (seeds/strong.py) or both")
    s = sub.add_parser("search", parents=[common], help="a search with the non-LLM operators, resumable")
    s.add_argument("--budget-s", type=float, default=60.0, help="the training budget of every evaluation")
    s.add_argument("--evals", type=int, default=20, help="finished evaluations in all, the 2 seeds included")
    s.add_argument("--run-dir", default=str(REPO / "runs" / "training_search"), help="the run; RUN_DIR.tar.gz "
                   "beside it (written at the end of every call, and to $OUT) is unpacked over it when present")
    s = sub.add_parser("ttt", parents=[common], help="time to target of the time_to_target seed")
    s.add_argument("--target-from", default="weak", help="the target: the weak seed's mean bpb in the file")
    s.add_argument("--target-bpb", type=float, help="a target given outright instead")
    s.add_argument("--target-budget-s", type=float, default=120.0, help="the weak runs' budget (default 120)")
    s.add_argument("--steps", type=int, help="the seed's STEPS (default: those of the schedule already begun in "
                   "the file, with its target; else --fraction of the steps the strong seed made in "
                   "--target-budget-s, from its tokens seen; else the seed's own). A new value starts anew")
    s.add_argument("--fraction", type=float, default=0.6, help="see --steps (default %(default)s)")
    s.add_argument("--seeds", help="RNG seeds (default: the task's, 0 to seeds - 1)")
    s.add_argument("--cap-s", type=float, help="the cap per seed (default: the task's budget_s)")
    sub.add_parser("table", parents=[common], help="the markdown tables for BENCHMARKS.md")
    s = sub.add_parser("set-target", parents=[common], help="the weak seed's measured bpb as the GPU target")
    s.add_argument("--target-budget-s", type=float, default=120.0)
    s.add_argument("--task-toml", default=str(TTT / "task.toml"))
    s.add_argument("--device", help="whose runs (default: the device with the most weak runs in the file)")
    sub.add_parser("pack-data", parents=[common], help="the data folder as DATA.tar.gz beside it, to carry")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "pack-data":
            print(pack_data(args))
            return 0
        results = Results(args.json, Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
        if args.command == "table":
            from benchmarks.training_gpu_report import table
            from evo.eval.training.target import decide, resolve_rule

            print(table(results.data, list(SEED_FILES), decide, resolve_rule(TTT, "cuda").alpha))
            return 0
        if args.command == "set-target":
            print(cmd_set_target(args, results))
            return 0
        ctx, clock = Context(args), Clock(args.max_wall_s)
        from benchmarks.training_gpu_search import cmd_search

        command = {"seeds": cmd_seeds, "search": cmd_search, "ttt": cmd_ttt}[args.command]
        made, left = command(args, ctx, results, clock)
    except EvoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wall = time.monotonic() - clock.start
    results.data["calls"].append({"command": args.command, "argv": sys.argv[1:] if argv is None else argv,
                                  **ctx.stamp(), "wall_s": round(wall, 1), "made": made, "left": left})
    results.save()
    print(f"{args.command}: {made} run(s) made in {wall:.0f} s, {left} left"
          f"{' (call again)' if left else ''}; results in {results.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
