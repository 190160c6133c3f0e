"""How fast and how steady the kernel harness is: candidates per GPU-minute, and timing noise.

Throughput: variants of the single-operator seeds (different warps, distinct texts so none is cached)
are evaluated through one worker pool, `--parallel` children compiling at once while one times, all tasks'
candidates interleaved in one stream as a run feeds the pool (`--batches`: each task's alone, the pool drained
between tasks); the figure is candidates finished per minute of wall time after each task's one-time
reference job.
Noise: one candidate evaluated `--repeats` times, each time in a fresh child process (its own CUDA
context, its own compilation); the coefficient of variation of its median time per workload.

    python benchmarks/kernel_harness.py --json benchmarks/results/kernel_harness.json
    python benchmarks/kernel_harness.py --parallel 8,12 --checking-slots 4,8   # two settings, one call

Each setting's throughput is measured on a worker pool of its own; the noise, on the first setting's.
The per-stage table tells where a candidate's time goes (the judge's side, the child's, the waits).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.eval.backends.kernel import KernelEvaluator, WorkerPool  # noqa: E402
from evo.eval.bench import BenchConfig  # noqa: E402
from evo.eval.pipeline import Pipeline  # noqa: E402
from evo.eval.suite import kernel_task_names, seed_path  # noqa: E402
from evo.eval.worker import judges_for  # noqa: E402
from evo.program import Program  # noqa: E402
from evo.task import load_task  # noqa: E402


def variants(seed_text: str, n: int) -> list[str]:
    """`n` distinct texts of a seed: warps cycled where declared, a unique comment on each."""
    out = []
    for i in range(n):
        text = re.sub(r"^NUM_WARPS = \d+", f"NUM_WARPS = {[4, 8, 2, 4][i % 4]}", seed_text, flags=re.M)
        out.append(text + f"\n# variant {i}\n")
    return out


def stage_medians(reports: list[dict]) -> dict[str, float]:
    """Median seconds per stage of a child (setup, warm-up compile, lock wait, lock held, and the steps
    inside the lock), over the reports that have them."""
    stages: dict[str, list[float]] = {}
    for r in reports:
        for k, v in (r.get("seconds") or {}).items():
            stages.setdefault(k, []).append(float(v))
    return {k: statistics.median(v) for k, v in sorted(stages.items())}


def bound_summary(reports: list[dict]) -> dict[str, float]:
    """How the calls' gaps (the judge's clock less the reported time) sit against the no-op's, over every workload
    of the reports: the worst excess over its 90th percentile in units of the slack (over 1.0 is refused)."""
    worst, n, graphs, inside, whole, limited, slower, escaped, slack = 0.0, 0, 0, 0, 0, 0, [], [], []
    windows: list[float] = []
    for r in reports:
        for b in (r.get("bounds") or {}).values():
            n += 1
            graphs += bool(b.get("graph"))
            inside += bool(b.get("graph_events"))
            whole += bool(b.get("one_graph"))
            slack.append(b["slack_s"])
            worst = max(worst, (b["gap_s"] - b["gap_high_s"]) / b["slack_s"])
            limited += int(b.get("clock_limited", 0))
            if b.get("judged_s") and b["claimed_s"]:
                slower.append(b["judged_s"] / b["claimed_s"] - 1)
            if isinstance(b.get("escaped_s"), (int, float)) and b["claimed_s"]:
                escaped.append((b["escaped_s"], b["escaped_s"] / b["claimed_s"]))
            if isinstance(b.get("send_window_max_s"), (int, float)):
                windows.append(b["send_window_max_s"])
    return {"workloads": n, "worst_in_slack": worst, "timed_as_graphs": graphs, "events_in_graph": inside,
            "whole_call_one_graph": whole, "clock_limited_calls": limited,
            # the clock bound's resolution on these workloads (the slack: time_bound.time_bound)
            "slack_us_p10_p50_p90": [round(_at(sorted(slack), q) * 1e6, 1) for q in (0.1, 0.5, 0.9)],
            "median_judged_over_claimed": statistics.median(slower) if slower else 0.0,
            "worst_judged_over_claimed": max(slower, default=0.0),
            # work the child says ran after the end event (stream_join refuses past max(20 us, 25%)): honest
            # kernels' values, to set that threshold from
            "escaped_us_p50_p90_max": [round(_at(sorted(e for e, _ in escaped), q) * 1e6, 1) for q in (0.5, 0.9, 1.0)],
            "escaped_share_p90": _at(sorted(r for _, r in escaped), 0.9),
            # the judge's own send of a timed request, per workload its slowest: a lost turn of the interpreter's
            # lock there is in the clock (and in the gap), never the candidate's doing
            "send_window_max_us_p50_p90_max": [round(_at(sorted(windows), q) * 1e6, 1) for q in (0.5, 0.9, 1.0)]}


def _at(ordered: list[float], q: float) -> float:
    """The `q` quantile of sorted values, by rank (0 when there are none)."""
    return ordered[int(q * (len(ordered) - 1))] if ordered else 0.0


def measure_stream(pool: WorkerPool, config: BenchConfig, scratch: Path, tasks: str, per_task: int,
                   parallel: int, rung: str | None = None) -> dict:
    """Every task's variants in one stream through the pool, interleaved, `parallel` in flight per GPU at all
    times, as a run feeds it: the figure is all candidates over the wall time of the stream (each task's
    reference job done before it starts). `rung`: the family's rung each candidate is run at (the last when
    None)."""
    names = kernel_task_names(tasks.split(",")) if per_task > 0 else []
    pipelines, texts, prep = {}, {}, {}
    for name in names:
        task = load_task(name)
        ev = KernelEvaluator(task, 1, scratch, config=config, pool=pool)
        pipelines[name] = Pipeline(task, ev)  # every candidate the way a run takes it: screen, harness, audit
        t0 = time.perf_counter()
        print(f"   reference job of {name} ...", end=" ", flush=True)
        ev._prepare(ev._pick())  # the reference job, once per task and session
        prep[name] = time.perf_counter() - t0
        print(f"{prep[name]:.1f} s", flush=True)
        texts[name] = variants(seed_path(name).read_text(), per_task)
    jobs = [(name, texts[name][i]) for i in range(per_task) for name in names]  # interleaved: no task drains alone
    load = LoadSampler()
    t0 = time.perf_counter()
    with load, ThreadPoolExecutor(max_workers=parallel * len(pool.devices)) as ex:
        futures = [ex.submit(pipelines[name].evaluate_sync, Program(source=text), rung) for name, text in jobs]
        _follow(futures, pool, t0)
        results = [f.result() for f in futures]
    wall = time.perf_counter() - t0
    rows = []
    for name in names:
        mine = [r for (n, _), r in zip(jobs, results, strict=True) if n == name]
        reports = [r.report or {"passed": False, "error": r.error} for r in mine]
        for r, result in zip(reports, mine, strict=True):
            r["passed"] = result.ok  # the pipeline's verdict, not the harness's alone
        ok = sum(1 for r in reports if r.get("passed"))
        rows.append({"task": name, "candidates": len(mine), "passed": ok, "wall_s": wall, "reference_s": prep[name],
                     "per_gpu_minute": len(jobs) / wall * 60 / len(pool.devices),
                     "errors": sorted({str(r.get("error"))[:120] for r in reports if not r.get("passed")}),
                     "judge_processes_seen": len({r.get("judge_pid") for r in reports} - {None}),
                     "seconds": stage_medians(reports), "bounds": bound_summary(reports),
                     "bound_rows": [r.get("bounds") for r in reports]})
        pipelines[name].close()
    print(f"{len(jobs)} candidates of {len(names)} tasks in one stream: {wall:.1f} s "
          f"({len(jobs) / wall * 60 / max(1, len(pool.devices)):.1f}/GPU-min), "
          f"{sum(r['passed'] for r in rows)} passed; {load.summary()}", flush=True)
    return {"rows": rows, "per_gpu_minute": len(jobs) / wall * 60 / len(pool.devices) if wall else 0,
            "method": "stream", "rung": rung or "timing", "load_1m": load.samples, "cpus": os.cpu_count(),
            "judge_cpu_busy": load.judge_busy}


PROGRESS_S = 10.0  # a line this often while candidates are judged
STALL_S = 30.0  # no candidate done for this long: say who holds and waits on the GPU lock, and the judges' logs


def _follow(futures: list, pool: WorkerPool, t0: float) -> None:
    """Print how many candidates are done every PROGRESS_S, and a stall report when none ended in STALL_S: a
    call cut by its time limit then shows whether the harness was slow or stuck, and where."""
    pending, last_done, last_line, reported = set(futures), time.perf_counter(), time.perf_counter(), False
    while pending:
        done, pending = wait(pending, timeout=PROGRESS_S, return_when=FIRST_COMPLETED)
        now = time.perf_counter()
        if done:
            last_done, reported = now, False
        if now - last_line >= PROGRESS_S or not pending:
            print(f"   {len(futures) - len(pending)} of {len(futures)} done after {now - t0:.0f} s", flush=True)
            last_line = now
        if now - last_done > STALL_S and not reported:
            print(stall_report(pool), flush=True)
            reported = True


def stall_report(pool: WorkerPool) -> str:
    """Who holds and who waits on the GPU lock's files (from /proc/locks, by process), and the tail of each
    judge's log: what a stalled harness is waiting for."""
    folder = Path(os.environ.get("EVO_LOCK_DIR", "/tmp/evo-gpu-locks"))
    files = {f":{p.stat().st_ino} ": p.name for p in folder.glob("gpu-*") if p.is_file()}
    lines = [f"   STALL: no candidate done in the last {STALL_S:.0f} s; the GPU lock (/proc/locks):"]
    try:
        table = Path("/proc/locks").read_text().splitlines()
    except OSError:
        table = []
    for row in table:
        name = next((n for key, n in files.items() if key in row), None)
        if name is None:
            continue
        parts = row.split()
        waiting = parts[1] == "->"
        pid = parts[5] if waiting else parts[4]
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        role = "helper judge" if "--helper" in cmd else "judge" if "judge_process" in cmd else \
            "worker or its child" if "evo.eval.worker" in cmd else cmd[:60]
        mode = parts[4] if waiting else parts[3]
        lines.append(f"     {'waits' if waiting else 'holds'} {mode:5} {name:24} pid {pid} ({role})")
    for log in sorted(Path(pool.session).glob("judge-*.log")):
        tail = log.read_text(errors="replace").splitlines()[-15:]
        lines.append(f"   {log.name}, last {len(tail)} lines:")
        lines += [f"     {line}" for line in tail]
    return "\n".join(lines)


def _stat(pid: int) -> list[str]:
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(marker: bytes) -> dict[int, float]:
    """CPU seconds (user + system) so far of each process of ours (a descendant of this one) whose command line
    holds `marker`."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "cmdline").read_bytes():
                continue
            fields, parent = _stat(int(entry.name)), None
            ancestor = int(fields[1])
            for _ in range(6):  # worker -> lead judge -> helper judge
                if ancestor in (os.getpid(), 0, 1):
                    parent = ancestor
                    break
                ancestor = int(_stat(ancestor)[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid():
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


class LoadSampler:
    """The machine's 1-minute load average once a second while in use: is the stream short of CPUs (a load
    at or past the CPU count) rather than of the GPU? And each judge process's share of a CPU over the stream:
    one at 1.0 is the harness's bottleneck (one judge for 16 children looked like it on an H200: BENCHMARKS.md
    session 9)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.judge_busy: list[float] = []  # CPU seconds per wall second, per judge process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._judges0, self._t0 = cpu_seconds(b"evo.eval.judge_process"), time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._t0
        after = cpu_seconds(b"evo.eval.judge_process")
        self.judge_busy = sorted((after[pid] - self._judges0.get(pid, 0.0)) / wall for pid in after)

    def summary(self) -> str:
        if not self.samples:
            return "load not sampled"
        return (f"load average (1 min) median {statistics.median(self.samples):.1f}, max {max(self.samples):.1f} "
                f"on {os.cpu_count()} CPUs; judges' CPU busy " + ", ".join(f"{b:.2f}" for b in self.judge_busy))


def measure_throughput(pool: WorkerPool, config: BenchConfig, scratch: Path, tasks: str, per_task: int,
                       parallel: int, rung: str | None = None) -> dict:
    """Each task's variants as a stream of its own, the pool drained between tasks (the figure of sessions 1-6):
    per task and overall."""
    rows = [row for name in (kernel_task_names(tasks.split(",")) if per_task > 0 else [])
            for row in measure_stream(pool, config, scratch, name, per_task, parallel, rung)["rows"]]
    total_n, total_s = sum(r["candidates"] for r in rows), sum(r["wall_s"] for r in rows)
    return {"rows": rows, "per_gpu_minute": total_n / total_s * 60 / len(pool.devices) if total_s else 0,
            "method": "batches", "rung": rung or "timing"}


def measure_noise(pool: WorkerPool, config: BenchConfig, scratch: Path, task_name: str, repeats: int) -> dict:
    """The seed's kernel in `repeats` fresh candidates' processes, one after another: each workload's spread."""
    if repeats <= 0:
        return {}
    text = seed_path(f"kernels/{task_name}").read_text()
    ev = KernelEvaluator(load_task(f"kernels/{task_name}"), 1, scratch, config=config, pool=pool)
    medians: dict[str, list[float]] = {}
    claimed: dict[str, list[float]] = {}  # the events' own medians, before the clock's limit
    failed = 0
    for _ in range(repeats):
        report = ev.evaluate_source_sync(text)
        failed += not report.get("passed")
        for w in report["workloads"]:
            if w["time_s"]:
                medians.setdefault(w["workload"], []).append(w["time_s"])
                claimed.setdefault(w["workload"], []).append(w.get("claimed_s") or w["time_s"])
    ev.close()

    def cv_of(ts: list[float]) -> float:
        return statistics.stdev(ts) / statistics.mean(ts) if len(ts) > 1 else 0.0

    noise = {wname: {"mean_us": statistics.mean(ts) * 1e6, "cv": cv_of(ts), "n": len(ts),
                     "cv_of_events": cv_of(claimed[wname]), "medians_us": [round(t * 1e6, 3) for t in ts],
                     "event_medians_us": [round(t * 1e6, 3) for t in claimed[wname]]}
             for wname, ts in medians.items()}
    return {"task": task_name, "failed": failed, "workloads": noise}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="silu_fwd,softmax_fwd,rmsnorm_fwd,layernorm_fwd,gelu_tanh_fwd",
                    help="single-operator tasks for the throughput figure")
    ap.add_argument("--per-task", type=int, default=12, help="candidates per task for throughput")
    ap.add_argument("--parallel", type=_ints, default=[6],
                    help="children per GPU alive at once; comma-separated to measure several settings in one call")
    ap.add_argument("--checking-slots", type=_ints, default=[4],
                    help="children checking on a GPU at once, one per --parallel value (or one for all)")
    ap.add_argument("--judges", type=_ints, default=[0],
                    help="judge processes per GPU (0: the worker's default, one per 8 children); one value, or one "
                         "per --parallel value")
    ap.add_argument("--batches", action="store_true",
                    help="time each task's candidates as a batch of its own, the pool drained between tasks "
                         "(the figure of sessions 1-6), instead of one interleaved stream of all tasks")
    ap.add_argument("--rung", choices=("correctness", "timing"), default="timing",
                    help="the kernels family's rung the throughput's candidates run at: `correctness` checks the "
                         "visible workloads and times nothing (a cascade's cheap first look)")
    ap.add_argument("--noise-task", default="rmsnorm_fwd")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "kernel_harness.json")
    args = ap.parse_args()
    slots = args.checking_slots * len(args.parallel) if len(args.checking_slots) == 1 else args.checking_slots
    if len(slots) != len(args.parallel) or min(args.parallel + slots) < 1:
        ap.error("--checking-slots takes one value, or one per --parallel value; each at least 1")
    judges = args.judges * len(args.parallel) if len(args.judges) == 1 else args.judges
    if len(judges) != len(args.parallel) or min(judges) < 0:
        ap.error("--judges takes one value, or one per --parallel value; each at least 0")
    settings = list(zip(args.parallel, slots, judges, strict=True))

    scratch = Path(tempfile.mkdtemp(prefix="evo-harness-"))
    config = BenchConfig(compile_baseline=False)
    pools = []
    out: dict = {"devices": [], "config": config.__dict__, "parallel": settings[0][0],
                 "checking_slots": settings[0][1], "throughput": {}, "throughput_by_setting": [], "noise": {}}
    try:
        # -- throughput, once per setting (each its own worker pool); noise with the first
        for i, (parallel, checking, judging) in enumerate(settings):
            print(f"-- {parallel} children per GPU, {checking} checking at once, "
                  f"{judging or 'default'} judges", flush=True)
            pool = WorkerPool(scratch, parallel_per_device=parallel, checking_slots=checking, judges=judging or None)
            pools.append(pool)
            out["devices"] = pool.devices
            measure = measure_throughput if args.batches else measure_stream
            measured = measure(pool, config, scratch, args.tasks, args.per_task, parallel, args.rung)
            out["throughput_by_setting"].append({"parallel": parallel, "checking_slots": checking,
                                                 "judges": judging or judges_for(parallel), **measured})
            out["throughput"] = out["throughput_by_setting"][0]
            _save(out, args.json)  # each setting as it ends: a call cut by its time limit keeps what it measured
            if i == 0:
                out["noise"] = measure_noise(pool, config, scratch, args.noise_task, args.repeats)
                _save(out, args.json)
            pools.remove(pool)
            pool.close()
        out["throughput"] = out["throughput_by_setting"][0]
    finally:
        for p in pools:
            p.close()
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{'task':28s} {'cands':>5s} {'passed':>6s} {'wall s':>7s} {'/GPU-min':>9s}")
    for r in out["throughput"]["rows"]:
        print(f"{r['task']:28s} {r['candidates']:5d} {r['passed']:6d} {r['wall_s']:7.1f} {r['per_gpu_minute']:9.1f}")
    print(f"overall: {out['throughput']['per_gpu_minute']:.1f} candidates per GPU-minute at the {args.rung} rung")
    for t in out["throughput_by_setting"]:
        judge_side = {k: statistics.median(r["seconds"].get(k, 0.0) for r in t["rows"]) if t["rows"] else 0.0
                      for k in ("judge_compare", "judge_recheck", "judge_unpack")}
        print(f"  with {t['parallel']} children, {t['checking_slots']} checking, {t['judges']} judges: "
              f"{t['per_gpu_minute']:.1f} per GPU-minute, {sum(r['passed'] for r in t['rows'])} of "
              f"{sum(r['candidates'] for r in t['rows'])} passed; judge's stages (median over tasks, s): "
              + ", ".join(f"{k[6:]} {v:.2f}" for k, v in judge_side.items()))
    if out["throughput"]["rows"]:
        keys = sorted({k for r in out["throughput"]["rows"] for k in r["seconds"]})
        rows = out["throughput"]["rows"]
        print("\nmedian seconds per candidate and stage (held = GPU lock held; judge_ = the judge's side, "
              "judge_child_ = the child's as it reports):")
        print(f"{'stage':28s} " + " ".join(f"{r['task'].split('/')[-1][:12]:>12s}" for r in rows))
        for k in keys:
            print(f"{k:28s} " + " ".join(f"{r['seconds'].get(k, 0.0):12.3f}" for r in rows))
    print("\nthe judge's clock bound on honest candidates (worst distance to an edge, in slacks; 1.0 fails):")
    for r in out["throughput"]["rows"]:
        b = r["bounds"]
        print(f"{r['task']:28s} workloads {b['workloads']:4d}  worst {b['worst_in_slack']:.2f}  as CUDA graphs "
              f"{b['timed_as_graphs']} (events inside {b['events_in_graph']}, whole call {b['whole_call_one_graph']})  "
              f"slack us p10/p50/p90 {b['slack_us_p10_p50_p90']}  calls timed by the clock {b['clock_limited_calls']}  judged/claimed - 1: "
              f"median {b['median_judged_over_claimed']:.1%} worst {b['worst_judged_over_claimed']:.1%}  "
              f"after the end event (us, p50/p90/max) {b['escaped_us_p50_p90_max']}  "
              f"judge's slowest send (us, p50/p90/max) {b['send_window_max_us_p50_p90_max']}")
    if out["noise"]:
        nz = out["noise"]
        print(f"\nnoise ({nz['task']}, {args.repeats} fresh child processes, {nz['failed']} refused):")
        for wname, v in nz["workloads"].items():
            print(f"  {wname:28s} {v['mean_us']:9.2f} us  CV {v['cv']:.2%}  (events alone {v['cv_of_events']:.2%})  "
                  f"n {v['n']}")
    _save(out, args.json)
    print(f"wrote {args.json}")


def _save(out: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
