"""`evo.load` at scale: each analysis read timed on synthetic run stores of 100k and 1M programs (issue 16).

One synthetic run store is grown in a run directory up to each size in turn (programs from
benchmarks/population_scale.py's lineage generator, through `Store.add_programs`; see `fill`),
with what a real run stores beside them: a verdict per evaluated program (2% failed audits with
reasons), LLM usage (model, tokens) on half of the programs, one `operator_call` event per
program, and the `admitted` events that the real population decides on replay. At each size, every
read below runs in a fresh process (so that its peak memory is its own) and reports its wall time,
the rows it returned and the process's peak RSS:

    import_population  importing evo.population (pyribs, which imports torch), once per process
    open            evo.load(run_dir) and the metric names
    programs_few    run.programs(["id", "value"])
    programs        run.programs() (default columns: fields, value, metrics, descriptors)
    iter_programs   run.iter_programs(["id", "operator", "value"], chunksize=100_000), rows counted
    by_ids          run.programs(ids=1,000 random ids)
    evaluations     run.evaluations()
    admissions      run.admissions()
    operator_calls  run.operator_calls()
    verdicts        run.verdicts()
    lineage         run.lineage()
    best_ancestry   run.best(10) and run.ancestry(best)
    embeddings_5k   run.embeddings(sample=5000)
    archive_half    run.archive(at=n/2) (this and the next two: evo.population imported beforehand)
    progress        evo.report.metrics.progress(run)
    report          evo.report.html.build_report(run) (the whole `evo report`)

    .venv/bin/python benchmarks/load_scale.py                              # 100k, then 1M
    .venv/bin/python benchmarks/load_scale.py --sizes 20000 --json /tmp/x.json

Prints a table and writes JSON (default benchmarks/results/load_scale.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from population_scale import CHUNK, DESCRIPTOR_RANGES, OPERATOR_OF, TASK, grow_chunk, new_run  # noqa: E402

from evo.program import Program, Status, new_program_id  # noqa: E402
from evo.store import Store  # noqa: E402

OPS = ("import_population", "open", "programs_few", "programs", "iter_programs", "by_ids", "evaluations", "admissions",
       "operator_calls", "verdicts", "lineage", "best_ancestry", "embeddings_5k", "archive_half", "progress",
       "report")
TARGETS_S = {"open": 2.0, "programs_few": 10.0, "by_ids": 1.0, "best_ancestry": 1.0, "embeddings_5k": 2.0}
MODELS = ("qwen2.5-coder-7b", "qwen2.5-coder-32b")
CHECKS = ["syntax", "entry_point", "threads", "processes", "network", "ctypes", "gc", "inspect", "frame_walking",
          "import_tricks", "monkeypatching", "precision_flags", "native_code", "environment", "dynamic_code",
          "signals", "file_writes", "file_reads", "obfuscation"]


def _verdict(passed: bool) -> str:
    """A verdict as the pipeline stores it (`Verdict.to_json`), about 600 bytes."""
    reasons = [] if passed else [{"check": "network", "reason": "imports socket: a candidate may not reach the network"}]
    return json.dumps({"allowed": ["module_state", "sleep_and_clock"], "checks": CHECKS, "level": "full",
                       "passed": passed, "reasons": reasons, "seconds": 7.1e-05, "status": "pass" if passed else "fail"})


def chunk_programs(chunk: dict[str, Any], index: int, rng: np.random.Generator) -> list[Program]:
    """The chunk's programs: 88% evaluated, 10% failed (an error), 2% failed by the audit; half by an LLM."""
    n = chunk["n"]
    ids = [new_program_id() for _ in range(n)]
    ok_verdict, bad_verdict = _verdict(True), _verdict(False)
    programs = []
    for i in range(n):
        parent = chunk["parents"][i]
        u = rng.random()
        failed, audit = u < 0.12, u < 0.02
        score = None if failed else float(rng.normal(2.0, 0.3))
        descriptors = () if failed else tuple(float(rng.uniform(lo, hi)) for lo, hi in DESCRIPTOR_RANGES)
        op = OPERATOR_OF[chunk["kinds"][i]]
        meta: dict[str, object] = {"novelty": round(float(rng.uniform(0.0, 0.2)), 6)}
        if op.startswith("llm"):
            meta["llm"] = {"model": MODELS[i % 2], "prompt_tokens": int(rng.integers(800, 3000)),
                           "completion_tokens": int(rng.integers(100, 900))}
        metrics = {} if failed else {"sum_radii": score, "radius_std": descriptors[0],
                                     "boundary_fraction": descriptors[1]}
        programs.append(Program(
            source=chunk["sources"][i], id=ids[i], parents=() if parent is None else (ids[parent],), operator=op,
            island=index % 2, status=Status.FAILED if failed else Status.EVALUATED, score=score, metrics=metrics,
            descriptors=descriptors, error=("audit: network" if audit else "IndexError: list index out of range")
            if failed else None, verdict=bad_verdict if audit else ok_verdict if not failed else None, meta=meta,
        ))
    return programs


class Filler:
    """Grows the store; keeps the population so that each admission is decided as a live run would."""

    def __init__(self, run_dir: Path, workers: int):
        from evo.config import RunConfig
        from evo.replay import new_population
        from evo.task import load_task

        new_run(run_dir)
        self.run_dir = run_dir
        self.workers = workers
        self.size = 0
        config = RunConfig.from_dict(Store.in_dir(run_dir, readonly=True).get_meta("config"))
        self.population = new_population(load_task(TASK), config, None)
        self.rng = np.random.default_rng(0)

    def grow(self, stop: int) -> float:
        t0 = time.perf_counter()
        store = Store.in_dir(self.run_dir)
        jobs = [(1000 + c, min(CHUNK, stop - c * CHUNK), 0, "lowrank") for c in range(self.size // CHUNK, -(-stop // CHUNK))]
        with Pool(self.workers) as pool:
            for j, chunk in enumerate(pool.imap(grow_chunk, jobs)):
                programs = chunk_programs(chunk, self.size // CHUNK + j, self.rng)
                for lo in range(0, len(programs), 5000):
                    store.add_programs(programs[lo : lo + 5000], chunk["vectors"][lo : lo + 5000])
                self._events(store, programs)
                print(f"  filled {self.size + sum(len(p) for p in [programs]):,}", end="\r", flush=True)
                self.size += len(programs)
        store.close()
        return time.perf_counter() - t0

    def _events(self, store: Store, programs: list[Program]) -> None:
        """One operator call per program (with its LLM usage), and the admissions the population decides."""
        for p in programs:
            call: dict[str, object] = {"operator": p.operator, "parents": list(p.parents), "island": p.island,
                                       "seconds": round(float(self.rng.exponential(0.01)), 6)}
            if "llm" in p.meta:
                call["llm"] = p.meta["llm"]
            store.log("operator_call", call, program_id=p.id)
            if p.status == Status.EVALUATED and p.score is not None:
                d = self.population.admit(p.id, p.island, p.score, p.descriptors)
                if d.admitted:
                    store.log("admitted", {"cell": d.cell, "status": d.status, "island": p.island,
                                           "previous": d.previous, "previous_score": d.previous_score},
                              program_id=p.id)


# -- measuring (each op in a fresh process) ----------------------------------------------------------
def run_op(op: str, run_dir: Path) -> dict[str, Any]:
    """Time one read; returns seconds, rows and this process's peak RSS."""
    import evo

    if op in ("archive_half", "progress", "report"):
        # pyribs imports torch (seconds, more on a busy machine): timed apart, as `import_population`
        import evo.population  # noqa: F401
    if op == "import_population":
        t0 = time.perf_counter()
        import evo.population  # noqa: F401, F811

        return {"op": op, "seconds": time.perf_counter() - t0, "rows": 0, "peak_rss_gb": peak_rss_gb()}
    t0 = time.perf_counter()
    run = evo.load(run_dir)
    rows: int = 0
    if op == "open":
        rows = len(run.metric_names)
    elif op == "programs_few":
        rows = len(run.programs(["id", "value"]))
    elif op == "programs":
        rows = len(run.programs())
    elif op == "iter_programs":
        rows = sum(len(c) for c in run.iter_programs(["id", "operator", "value"], chunksize=100_000))
    elif op == "by_ids":
        ids = run.embeddings(sample=1000, seed=3).ids
        t0 = time.perf_counter()  # the ids are drawn first, untimed
        rows = len(run.programs(ids=ids))
    elif op == "evaluations":
        rows = len(run.evaluations())
    elif op == "admissions":
        rows = len(run.admissions())
    elif op == "operator_calls":
        rows = len(run.operator_calls())
    elif op == "verdicts":
        rows = len(run.verdicts())
    elif op == "lineage":
        rows = len(run.lineage())
    elif op == "best_ancestry":
        best = run.best(10, ["id", "value"])
        rows = len(run.ancestry(best["id"].iloc[0]))
    elif op == "embeddings_5k":
        rows = len(run.embeddings(sample=5000))
    elif op == "archive_half":
        rows = run.archive(at=run.n_evaluations // 2).num_elites
    elif op == "progress":
        from evo.report.metrics import progress

        rows = len(progress(run))
    elif op == "report":
        from evo.report.html import build_report

        rows = len(build_report(run))
    else:
        raise SystemExit(f"unknown op {op}")
    seconds = time.perf_counter() - t0
    run.close()
    return {"op": op, "seconds": seconds, "rows": rows, "peak_rss_gb": peak_rss_gb()}


def peak_rss_gb() -> float:
    """This process's peak resident memory. VmHWM, not `ru_maxrss`: Linux carries `ru_maxrss` over from
    the parent through fork and exec, so a child measured that way reports the filler's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(run_dir: Path, ops: list[str]) -> list[dict[str, Any]]:
    out = []
    for op in ops:
        proc = subprocess.run([sys.executable, __file__, "--op", op, "--run-dir", str(run_dir)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            out.append({"op": op, "error": proc.stderr[-2000:]})
            print(f"  {op}: FAILED\n{proc.stderr[-2000:]}")
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {op:15s} {res['seconds']:9.2f} s  {res['rows']:>10,} rows  {res['peak_rss_gb']:.2f} GB")
        out.append(res)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated program counts, ascending")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--keep", type=Path, help="build the run here and keep it (default: a temporary folder, removed)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "load_scale.json")
    ap.add_argument("--op", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.op:  # a child process: one measurement
        print(json.dumps(run_op(args.op, args.run_dir)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    ops = args.ops.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep if args.keep else Path(tmp) / "run"
        # A kept store that is already big enough is measured again as it is (after a change to the reads).
        have = 0
        if (run_dir / "evo.db").is_file():
            store = Store.in_dir(run_dir, readonly=True)
            have = store.count_programs()
            store.close()
        filler = None if have else Filler(run_dir, args.workers)
        results = []
        for size in sizes:
            if filler is None and have != size:
                raise SystemExit(f"{run_dir} holds {have:,} programs: measure it with --sizes {have}, or give "
                                 "a new --keep folder")
            fill_s = filler.grow(size) if filler is not None else 0.0
            db = run_dir / "evo.db"
            db_bytes = sum(p.stat().st_size for p in run_dir.glob("evo.db*"))
            print(f"{size:,} programs: filled in {fill_s:.0f} s, store {db_bytes / 2**30:.2f} GiB")
            measured = measure(run_dir, ops)
            passed = {op: r["seconds"] <= TARGETS_S[op] for r in measured if (op := r["op"]) in TARGETS_S
                      and "seconds" in r}
            results.append({"size": size, "fill_s": fill_s, "db_bytes": db_bytes, "db": db.name,
                            "reads": measured, "passed": passed})
    print()
    print(f"{'read':15s}" + "".join(f"{s:>22,}" for s in sizes))
    for op in ops:
        cells = []
        for r in results:
            m = next((x for x in r["reads"] if x["op"] == op), {})
            cells.append(f"{m['seconds']:8.2f} s {m['peak_rss_gb']:5.2f} GB" if "seconds" in m else "failed")
        print(f"{op:15s}" + "".join(f"{c:>22s}" for c in cells))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "load_scale", "command": " ".join(["python", "benchmarks/load_scale.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"), "commit": commit.stdout.strip(),
        "fill": "Store.add_programs in batches of 5,000 (population_scale's lineage generator, low-rank embeddings "
                "of 256 dims), one operator_call event per program and the admitted events of a replayed population "
                "(Store.log); 88% evaluated, 10% failed, 2% failed audits; half of the programs with LLM usage",
        "targets_s": TARGETS_S,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg": os.getloadavg()},
        "results": results,
    }, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
