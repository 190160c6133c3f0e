"""The engine-overhead benchmark runs end to end (--quick) and writes its report; speed is not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "engine_overhead.py"


def test_engine_overhead_quick_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"benchmark", "task", "fill", "measure", "target_per_s", "passed", "phases", "machine",
            "git_commit"} <= set(report)
    assert (report["fill"], report["measure"]) == (500, 500)
    assert report["passed"] is None  # --quick gives no verdict
    assert {"cpu_count", "python", "platform"} <= set(report["machine"])
    fill, measure = report["phases"]
    assert (fill["phase"], measure["phase"]) == ("fill", "measure")
    assert fill["candidates_evaluated"] == 500 and fill["evaluations_at_start"] == 0
    assert measure["candidates_evaluated"] == 500 and measure["evaluations_at_start"] == 500
    for phase in (fill, measure):
        assert phase["proposals"] > 0 and phase["candidates_per_s"] > 0
        assert {"propose", "record", "  store add_program", "  store record_evaluation"} <= set(phase["stages"])
        # 500 evaluations allocate far more than a young generation's threshold: the collector ran, and was timed
        collected = phase["garbage_collection"]
        assert sum(collected["collections"]) >= 1 and collected["seconds"] > 0
        assert collected["longest_ms"] <= 1e3 * collected["seconds"] + 1e-6


def test_timed_call_cost_takes_a_call_apart_on_the_cpu(tmp_path: Path) -> None:
    """Its judge and child talk over the judge's clock socket; on a CPU it writes today's path and its steps."""
    script = SCRIPT.parent / "timed_call_cost.py"
    out = tmp_path / "t.json"
    proc = subprocess.run([sys.executable, str(script), "--calls", "5", "--device", "cpu", "--json", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["workloads"] and report["clock"] == {}
    for row in report["workloads"].values():
        assert set(row) == {"today", "parts"} and row["today"]["n"] == 5
        assert row["today"]["median_us"] > 0  # the clock saw the digest and the round trip at least
        assert {"unmask_into", "flush", "replay_noop", "digest", "answer_json"} == set(row["parts"])
