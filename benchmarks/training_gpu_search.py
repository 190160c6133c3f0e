"""The search of benchmarks/training_gpu.py: `evo run`, then `evo resume` of the same run dir in later calls.

The run dir travels between calls as RUN_DIR.tar.gz (its store only: a few hundred KB), written at the end of
every call beside the run dir and in $OUT; a call that finds the archive unpacks it over the run dir first. The
engine's own --time-limit stops it from starting an evaluation it cannot finish in the call; past the call's
allowance it is interrupted and the evaluation in flight is abandoned (its program stays `proposed` and is
evaluated again on resume: the store never counts one twice).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evo.checkout_env import checkout_env
from evo.errors import EvoError

if TYPE_CHECKING:
    from benchmarks.training_gpu import Clock, Context, Results

REPO = Path(__file__).resolve().parents[1]
# params over the `# evo:` tunables of both seeds, as benchmarks/kernel_search.py weighs them; no re-timing on
# resume (each elite would be trained again, a minute or more each) and no lessons (no model is served).
SEARCH_CONFIG = """workers = 1
retime_on_resume = false
lessons_every = 0
[operators]
params = 4.0
params_crossover = 1.0
constants = 1.0
crossover = 0.5
"""


def search_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    run_dir = Path(args.run_dir).resolve()
    return run_dir, run_dir.with_name(run_dir.name + ".tar.gz")


def unpack_run(run_dir: Path, archive: Path) -> None:
    """The carried archive is the run's truth: it replaces a run dir left by an earlier call on this machine."""
    if not archive.is_file():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(run_dir.parent, filter="data")


def pack_run(run_dir: Path, archive: Path, out: Path | None) -> None:
    """The run dir as one small archive (its store; no scratch, no lock), beside it and in $OUT."""
    tmp = archive.with_suffix(".part")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(run_dir, arcname=run_dir.name, filter=lambda info: None if Path(info.name).name in
                ("scratch", "evo.lock") else info)
    tmp.replace(archive)
    if out is not None and out.resolve() != archive.parent.resolve():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, out / archive.name)


def search_state(run_dir: Path) -> dict[str, Any]:
    """Every finished evaluation of the run, in order, from its store (the store never counts one twice)."""
    from evo.store import Store

    store = Store.in_dir(run_dir, readonly=True)
    try:
        walls = {pid: data.get("wall_s") for _, _, _, pid, data in store.events("evaluated") if data}
        rows = []
        for ev in store.iter_evaluations():
            p = store.get_program(ev.program_id)
            rows.append({"n": ev.n, "id": p.id[:12], "operator": p.operator, "seed_file": p.meta.get("seed_file"),
                         "ok": ev.score is not None, "val_bpb": p.metrics.get("val_bpb") if ev.score is not None
                         else None, "params": p.metrics.get("params"), "wall_s": walls.get(p.id)})
        config = store.get_meta("config") or {}
    finally:
        store.close()
    valid = [r for r in rows if r["ok"]]
    best = min(valid, key=lambda r: r["val_bpb"]) if valid else None
    return {"evaluations": len(rows), "valid": len(valid), "budget_s": config.get("train_budget_s"),
            "budget": config.get("budget"), "best": best, "rows": rows,
            "seeds": {r["seed_file"]: r["val_bpb"] for r in rows if r["operator"] == "seed"}}


def cmd_search(args: argparse.Namespace, ctx: Context, results: Results, clock: Clock) -> tuple[int, int]:
    run_dir, archive = search_paths(args)
    unpack_run(run_dir, archive)
    done = search_state(run_dir)["evaluations"] if (run_dir / "evo.db").is_file() else 0
    if done >= args.evals:
        print(f"search: {done} of {args.evals} evaluations done already", flush=True)
        return 0, 0
    walls = [r["wall_s"] for r in search_state(run_dir)["rows"] if r["wall_s"]] if done else []
    est = 1.1 * max(walls) if walls else args.budget_s + (40.0 if ctx.smoke else 75.0)
    limit = clock.left() - est - 35.0  # the engine's start, the evaluation in flight at the limit, packing
    if limit < 1.0:
        print(f"stopped: {clock.left():.0f} s left, an evaluation takes about {est:.0f} s: call again", flush=True)
        return 0, args.evals - done
    env = checkout_env(EVO_DATA=str(ctx.data))
    if ctx.smoke:
        env["EVO_TRAIN_DEVICE"] = "cpu"
    if done or (run_dir / "evo.db").is_file():
        argv = ["resume", str(run_dir), "--budget", str(args.evals)]
    else:
        config = run_dir.with_name(run_dir.name + ".toml")
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(SEARCH_CONFIG)
        argv = ["run", "training/lm_budget", "--run-dir", str(run_dir), "--budget", str(args.evals),
                "--budget-s", str(args.budget_s), "--config", str(config)]
    log = (ctx.out or run_dir.parent) / "training_search.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"search: {done} of {args.evals} evaluations done; `evo {argv[0]}` for up to {limit:.0f} s "
          f"(an evaluation about {est:.0f} s); log {log}", flush=True)
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, "-m", "evo", *argv, "--time-limit", f"{limit:.0f}", "--quiet"],
                                cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=max(clock.left() - 15.0, 1.0))
        except subprocess.TimeoutExpired:  # past the allowance: abandon the evaluation in flight (redone later)
            for _ in range(2):
                proc.send_signal(signal.SIGINT)
                time.sleep(1.0)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    tail = "".join(log.read_text().splitlines(keepends=True)[-12:])
    print(tail, flush=True)
    if not (run_dir / "evo.db").is_file():
        raise EvoError(f"`evo {argv[0]}` made no run (exit {proc.returncode}); the end of {log}:\n{tail}")
    state = search_state(run_dir)
    pack_run(run_dir, archive, ctx.out)
    devices = {c["device"] for c in results.data["calls"] if c["command"] == "search"} | {ctx.device}
    results.data["search"] = {**state, "target_evals": args.evals, "devices": sorted(devices)}
    results.save()
    return state["evaluations"] - done, max(args.evals - state["evaluations"], 0)
