"""Write a published archive (`archive/<family>-<device>.jsonl`) from many finished runs, and check that a new
run seeded from it starts at its scores.

Each run's best programs go through `evo publish` (evo/publish.py): evaluated afresh at the auditor's publish
level on this machine's device, and written only with a pass; the rows of every run merge into one JSONL per
family and device (a program published again replaces its row). `--check-seeding` then starts, for each task
in the file, a fresh `evo run TASK --seed-from FILE` whose budget is just its seeds, all at once, and compares
the best seed's value there with the archive's: the proof that the file seeds a search at its scores.

    python3 benchmarks/kernel_search.py --time-limit 240 --runs runs/ks             # runs to publish from
    python3 benchmarks/export_archive.py runs/ks --top 3 --expect-device h100 --check-seeding
    python3 benchmarks/export_archive.py --check archive/kernels-h100.jsonl        # only the seeding check
    git add archive/kernels-h100.jsonl archive/kernels                              # the file and its records

A RUN argument is a run directory or a folder of them (as kernel_search.py writes). Prints a table and
writes JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.checkout_env import checkout_env  # noqa: E402
from evo.errors import EvoError  # noqa: E402
from evo.store import DB_NAME, Store  # noqa: E402


def run_dirs(paths: list[Path]) -> list[Path]:
    """Each path that is a run directory, and the run directories directly inside each that is not."""
    found: list[Path] = []
    for path in paths:
        if (path / DB_NAME).is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if (p / DB_NAME).is_file())
            if not inside:
                raise SystemExit(f"{path} holds no evo run (no {DB_NAME} in it or in its folders)")
            found += inside
        else:
            raise SystemExit(f"{path}: no such folder; give run directories or folders of them")
    return found


def publish_one(run_dir: Path, top: int, archive: Path) -> list[dict[str, Any]]:
    """Publish one run's `top` best into `archive` (`evo publish`): one row per program offered."""
    from evo.publish import publish_run

    start = time.time()
    try:
        results = publish_run(run_dir, top, archive)
    except EvoError as e:
        return [{"run": str(run_dir), "program_id": None, "published": False, "why_not": str(e)}]
    rows = []
    for r in results:
        row = r.row or {}
        rows.append({"run": str(run_dir), "task": row.get("task"), "program_id": r.program_id,
                     "published": r.path is not None, "run_value": r.value, "value": row.get("value"),
                     "metric": r.metric, "device": row.get("device"), "why_not": r.why_not or None,
                     "file": str(r.archive_file.name) if r.archive_file else None,
                     "seconds": round(time.time() - start, 1)})
    return rows


def export(runs: list[Path], top: int, archive: Path, jobs: int) -> tuple[list[dict[str, Any]], set[Path]]:
    """Publish every run's `top` best into `archive`, `jobs` runs at once (each in its own process, with its own
    worker; the GPU's timing lock keeps their timings apart), each into a staging folder first; then merge the
    rows into `archive/<family>-<device>.jsonl` (one writer) and copy the records beside them."""
    from evo.publish import write_rows

    archive.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=archive))
    env = checkout_env()
    rows: list[dict[str, Any]] = []
    try:
        pending = list(enumerate(runs))
        running: list[tuple[Path, subprocess.Popen[str]]] = []
        while pending or running:
            while pending and len(running) < jobs:
                i, run_dir = pending.pop(0)
                stage = staging / f"{i:03d}"
                cmd = [sys.executable, __file__, "--publish-one", str(run_dir), "--top", str(top),
                       "--archive", str(stage)]
                running.append((stage, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)))
            stage, proc = running.pop(0)
            said, _ = proc.communicate()
            try:
                rows += json.loads(said.strip().splitlines()[-1])
            except (ValueError, IndexError):
                rows.append({"run": str(stage), "program_id": None, "published": False,
                             "why_not": f"the publishing process exited {proc.returncode}: {said[-500:]}"})
        files = set()
        for jsonl in sorted(staging.glob("*/*.jsonl")):
            new = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
            write_rows(archive / jsonl.name, new)
            files.add(archive / jsonl.name)
        for stage in sorted(staging.iterdir()):
            for record in stage.iterdir():
                if record.is_dir():  # <family>/<task>/<id>.py and .json, as `evo publish` writes them
                    shutil.copytree(record, archive / record.name, dirs_exist_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows, files


def _better(objective: str, a: float, b: float) -> bool:
    return a > b if objective == "maximize" else a < b


def check_seeding(files: set[Path], work: Path, workers: int) -> list[dict[str, Any]]:
    """For every task of every archive file: a fresh run seeded from the file, its budget its seeds (the task's
    own and the file's rows); its best seed's value beside the archive's best."""
    work.mkdir(parents=True, exist_ok=True)
    best: dict[tuple[Path, str], dict[str, Any]] = {}
    counts: dict[tuple[Path, str], int] = {}
    for f in files:
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key = (f, str(row["task"]))
            counts[key] = counts.get(key, 0) + 1
            if row.get("value") is not None and (key not in best or _better(
                    str(row.get("objective", "maximize")), row["value"], best[key]["value"])):
                best[key] = row
    procs = {}
    env = checkout_env()
    for i, ((f, task), n) in enumerate(sorted(counts.items())):
        run_dir = work / f"{i:02d}_{Path(task).name}"
        cmd = [sys.executable, "-m", "evo", "run", task, "--run-dir", str(run_dir), "--budget", str(n + 1),
               "--workers", str(workers), "--quiet", "--seed-from", str(f)]
        log = open(work / f"{run_dir.name}.log", "w")  # noqa: SIM115 - closed below, once the run ends
        procs[(f, task)] = (run_dir, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    out = []
    for (f, task), (run_dir, proc, log) in procs.items():
        rc = proc.wait()
        log.close()
        ref = best.get((f, task), {})
        entry: dict[str, Any] = {"file": str(f), "task": task, "rows": counts[(f, task)], "archive_best": ref.get("value"),
                                 "seeded_best": None, "run": str(run_dir), "exit": rc}
        if rc == 0:
            store = Store.in_dir(run_dir, readonly=True)
            try:  # every seed: a row identical to the task's own seed is dropped as its near-duplicate
                values = [p.metrics.get(str(ref.get("metric"))) for p in store.iter_programs(statuses=["evaluated"])
                          if p.operator == "seed"]
            finally:
                store.close()
            values = [v for v in values if v is not None]
            if values:
                pick = max if ref.get("objective", "maximize") == "maximize" else min
                entry["seeded_best"] = pick(values)
        a, s = entry["archive_best"], entry["seeded_best"]
        entry["ratio"] = s / a if a and s is not None else None
        out.append(entry)
    return out


def _fmt(x: object) -> str:
    return f"{x:.4g}" if isinstance(x, float) else "-" if x is None else str(x)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Publish, merge, optionally check seeding; returns what it wrote to --json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="a run directory or a folder of them")
    ap.add_argument("--check", type=Path, action="append", default=[], metavar="FILE",
                    help="check the seeding of this archive file (repeatable), publishing nothing")
    ap.add_argument("--top", type=int, default=3, help="best programs offered per run (each must pass publish)")
    ap.add_argument("--archive", type=Path, default=REPO / "archive",
                    help="the archive folder: <family>-<device>.jsonl and <task>/<id>.py records go there")
    ap.add_argument("--expect-device", help="fail unless every published row was measured on this device (h100, "
                    "cpu, ...): a file meant for the H100 is never written from another machine by mistake")
    ap.add_argument("--check-seeding", action="store_true",
                    help="start a run seeded from each file written, per task, and compare its start to the file")
    ap.add_argument("--workers", type=int, default=2, help="candidates in flight per seeding check run")
    ap.add_argument("--work", type=Path, help="folder for the seeding check's runs (default: runs/export_archive-"
                    "<date-time>)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="runs published at once (each starts its own worker and stages its task's expected outputs "
                         "on disk: five at once filled a 64 GB disk on an H200, BENCHMARKS.md session 9)")
    ap.add_argument("--json", type=Path, help="results file (default: print only)")
    ap.add_argument("--publish-one", type=Path, help=argparse.SUPPRESS)  # the child process of `export`
    args = ap.parse_args(argv)
    if args.publish_one is not None:
        print(json.dumps(publish_one(args.publish_one, args.top, args.archive), default=str))
        return {}
    if args.top < 1:
        raise SystemExit("--top must be at least 1")
    if bool(args.runs) == bool(args.check):
        raise SystemExit("give run directories to publish from, or --check FILE to check an archive's seeding")
    missing = [str(f) for f in args.check if not f.is_file()]
    if missing:
        raise SystemExit(f"no archive file {', '.join(missing)}")

    runs = run_dirs(args.runs)
    start = time.time()
    rows, files = export(runs, args.top, args.archive, max(1, args.jobs)) if runs else ([], set(args.check))
    published = [r for r in rows if r["published"]]
    if runs:
        print(f"{'task':32s} {'program':12s} {'run value':>10s} {'published':>10s} {'device':>8s}  why not")
        for r in rows:
            task = str(r.get("task") or Path(r["run"]).name)
            print(f"{task:32s} {str(r['program_id'] or '-')[:12]:12s} {_fmt(r.get('run_value')):>10s} "
                  f"{_fmt(r.get('value')) if r['published'] else 'refused':>10s} {_fmt(r.get('device')):>8s}  "
                  f"{r.get('why_not') or ''}")
        print(f"{len(published)} of {len(rows)} programs published from {len(runs)} runs in "
              f"{time.time() - start:.0f} s into {', '.join(str(f) for f in sorted(files)) or 'no file'}")
    wrong = sorted({str(r["device"]) for r in published if args.expect_device and r["device"] != args.expect_device})
    result: dict[str, Any] = {"rows": rows, "files": sorted(str(f) for f in files), "runs": [str(r) for r in runs]}
    if (args.check_seeding or args.check) and files:
        work = args.work or REPO / "runs" / f"export_archive-{time.strftime('%Y%m%d-%H%M%S')}"
        checks = check_seeding(files, work, args.workers)
        print(f"\n{'task':32s} {'rows':>4s} {'archive best':>12s} {'seeded start':>12s} {'ratio':>6s}")
        for c in checks:
            print(f"{Path(c['task']).name:32s} {c['rows']:4d} {_fmt(c['archive_best']):>12s} "
                  f"{_fmt(c['seeded_best']):>12s} {_fmt(c['ratio']):>6s}" + (f"  (evo run exited {c['exit']})"
                                                                              if c["exit"] else ""))
        result["seeding"] = checks
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.json}")
    if wrong:
        raise SystemExit(f"rows measured on {', '.join(wrong)}, not {args.expect_device}: this machine is not the "
                         "device the archive is meant for")
    if runs and not published:
        raise SystemExit("nothing was published (see why not above)")
    return result


if __name__ == "__main__":
    main()
