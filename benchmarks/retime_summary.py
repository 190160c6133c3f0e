"""Summarise the `retimed` events of kernel runs: how far each elite's score moved when re-timed.

    python benchmarks/retime_summary.py runs/kernel_search/*   # run directories of resumed kernel runs

Prints one row per run (elites re-timed, median and largest relative change, failures) and writes
JSON next to it with --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.store import Store  # noqa: E402


def summarise(run_dir: Path) -> dict[str, object]:
    store = Store.in_dir(run_dir, readonly=True)
    rows = store.db.execute("SELECT data FROM events WHERE kind = 'retimed' ORDER BY seq").fetchall()
    changes, failed = [], 0
    for (data,) in rows:
        d = json.loads(data)
        if not d.get("ok") or d.get("score") is None:
            failed += 1
        elif d.get("old_score"):
            changes.append(d["score"] / d["old_score"] - 1.0)
    best = store.best_programs(1)
    return {"run": run_dir.name, "retimed": len(rows), "failed": failed,
            "median_change": statistics.median(changes) if changes else None,
            "max_abs_change": max((abs(c) for c in changes), default=None),
            "evaluations": store.count_evaluations(), "best": best[0].score if best else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = [summarise(r) for r in args.runs if (r / "evo.db").is_file()]
    print(f"{'run':28s} {'retimed':>7s} {'failed':>6s} {'median':>8s} {'max|d|':>8s} {'evals':>6s} {'best':>7s}")
    for r in rows:
        med = f"{r['median_change']:+.2%}" if r["median_change"] is not None else "-"
        mx = f"{r['max_abs_change']:.2%}" if r["max_abs_change"] is not None else "-"
        best = f"{r['best']:.3f}" if r["best"] is not None else "-"
        print(f"{r['run']:28s} {r['retimed']:7d} {r['failed']:6d} {med:>8s} {mx:>8s} {r['evaluations']:6d} {best:>7s}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
