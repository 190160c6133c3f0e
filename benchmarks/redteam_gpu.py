"""Every red-team hack and every honest variant through the static screen and the GPU harness.

For each hack of `tests/redteam/hacks/` and each harness tamperer of `tests/redteam/tamper/` (candidates for
`kernels/rmsnorm_fwd`): the screen's verdict, and the harness's first failing dynamic check when the screen
is bypassed, the column "rejected with the screen bypassed" (so that both lines of defence are measured:
the judge, `evo/eval/judge.py`, must reject every one of them on its own). Honest variants (`tests/honest/variants/`) and the seed must pass both. The audit's cost is
the median time of the harness's check phase (fresh inputs, poisoning, repeated calls, snapshots) and of
the full gate, per passing candidate.

    python benchmarks/redteam_gpu.py --json benchmarks/results/redteam_gpu.json
    python benchmarks/redteam_gpu.py --bypass-screen     # on a disposable machine only: see below

Without `--bypass-screen`, hacks the screen rejects never reach the harness (as in a run). With it, every
hack runs in the harness. There the Landlock guard (`evo/eval/fs_guard.py`) refuses writes outside a
candidate's folders where the kernel has Landlock; without Landlock some hacks really write their files
(a `.pth` into site-packages, a cache under /tmp). Use it only on a machine that is thrown away afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.eval.backends.kernel import KernelEvaluator, report_to_result  # noqa: E402
from evo.eval.bench import BenchConfig  # noqa: E402
from evo.eval.pipeline import Pipeline, verdict_of  # noqa: E402
from evo.program import Program  # noqa: E402
from evo.task import load_task  # noqa: E402


def expected_of(path: Path) -> str:
    first = path.read_text().split("\n", 1)[0].strip('"').strip()
    return first.removeprefix("expect:").strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "redteam_gpu.json")
    ap.add_argument("--bypass-screen", action="store_true",
                    help="run screen-rejected hacks in the harness too (disposable machines only)")
    ap.add_argument("--only", default="honest,hacks,tamper",
                    help="which corpora, comma-separated: honest (variants and the seed), hacks, tamper")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if not only or only - {"honest", "hacks", "tamper"}:
        ap.error(f"--only takes honest, hacks and tamper, comma-separated; got {args.only!r}")
    task = load_task("kernels/rmsnorm_fwd")
    scratch = Path(tempfile.mkdtemp(prefix="evo-redteam-"))
    ev = KernelEvaluator(task, 1, scratch, config=BenchConfig(compile_baseline=False))
    pipeline = Pipeline(task, ev)  # its full audit decides; the harness runs with or without its screen
    hacks = [p for kind in ("hacks", "tamper") if kind in only
             for p in sorted((REPO / "tests" / "redteam" / kind).glob("*.py"))]
    honest = sorted((REPO / "tests" / "honest" / "variants").glob("*.py")) + [REPO / "kernels" / "rmsnorm_fwd.py"] \
        if "honest" in only else []
    rows, costs, gates = [], [], []
    try:
        for path in honest + hacks:  # honest first: a run cut short still says whether honest code passes
            source = path.read_text()
            t0 = time.perf_counter()
            verdict = pipeline.screen(Program(source=source))
            screen_ms = (time.perf_counter() - t0) * 1e3
            if not verdict.passed and not args.bypass_screen:
                report = {"status": "skipped", "error": "rejected by the screen; not run"}
            else:
                report = ev.evaluate_source_sync(source)
            failed = next(((n, r) for n, ok, r in report.get("checks", []) if not ok), None)
            if report.get("status") == "skipped":
                failed = None
            elif report.get("status") != "ok":
                failed = (report.get("status"), str(report.get("error"))[:200])
            t0 = time.perf_counter()
            full = None
            if report.get("status") == "ok":
                result = report_to_result(report, 0.0)
                result.checks = [tuple(c) for c in report.get("checks", [])]
                full = verdict_of(pipeline.decide(source, result))
            gate_s = time.perf_counter() - t0
            is_hack = path.parent.name in ("hacks", "tamper")
            row = {"file": path.name, "hack": is_hack, "expect": expected_of(path) if is_hack else "pass",
                   "screen": "pass" if verdict.passed else verdict.reasons[0][0], "screen_ms": screen_ms,
                   "harness": failed[0] if failed else "pass", "harness_reason": failed[1][:160] if failed else "",
                   "full_audit": None if full is None else ("pass" if full.passed else full.reasons[0][0]),
                   "score": report.get("score")}
            row["rejected"] = row["screen"] != "pass" or row["harness"] != "pass"
            row["rejected_screen_bypassed"] = None if report.get("status") == "skipped" else row["harness"] != "pass"
            row["bounds"] = report.get("bounds", {})
            rows.append(row)
            if not is_hack and row["harness"] == "pass":
                costs.append(report.get("seconds", {}).get("checks", 0.0))
                gates.append(gate_s)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"partial": True, "rows": rows}, indent=1))  # kept if the run is cut
            print(f"{path.name:28s} expect {row['expect']:28s} screen {row['screen']:18s} harness {row['harness']:24s} "
                  f"rejected with the screen bypassed: {row['rejected_screen_bypassed']}", flush=True)
    finally:
        pipeline.close()  # and the harness
        shutil.rmtree(scratch, ignore_errors=True)
    hack_rows = [r for r in rows if r["hack"]]
    honest_rows = [r for r in rows if not r["hack"]]
    summary = {
        "hacks": len(hack_rows), "hacks_rejected": sum(r["rejected"] for r in hack_rows),
        "hacks_caught_by_harness": sum(r["harness"] != "pass" for r in hack_rows),
        "tamperers": sum(r["file"] in {p.name for p in (REPO / "tests" / "redteam" / "tamper").glob("*.py")}
                         for r in hack_rows),
        "rejected_with_the_screen_bypassed": sum(bool(r["rejected_screen_bypassed"]) for r in hack_rows),
        "run_with_the_screen_bypassed": sum(r["rejected_screen_bypassed"] is not None for r in hack_rows),
        "honest": len(honest_rows), "honest_passed": sum(not r["rejected"] for r in honest_rows),
        "median_check_phase_s": statistics.median(costs) if costs else None,
        "median_full_gate_s": statistics.median(gates) if gates else None,
    }
    print(json.dumps(summary, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
