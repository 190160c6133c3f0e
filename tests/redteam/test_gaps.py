"""What the trusted side does not catch yet, kept as candidates that pass the judge today.

Each file of `gaps/` is a candidate that would defeat a check: the check runs in the candidate's own process
(its evidence), or the bound it sits under is not tight. They run here with the screen bypassed and must
*pass* the judge, so that the day one is caught this test fails and the candidate moves to `tamper/`. Each but
those in SCREEN_PASSES is also refused by the static screen, the first filter, and docs/auditor.md ("What a
candidate can still do") says what each one can gain.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evo.audit import Level, audit
from evo.eval.backends.kernel import KernelEvaluator

GAPS = Path(__file__).parent / "gaps"
# Gaps the screen passes too (none today: the side stream of gpu_work_at_import is what it refuses).
SCREEN_PASSES: set[str] = set()


@pytest.mark.parametrize("name", ["forged_evidence", "gpu_work_at_import", "work_in_the_unmasking",
                                  "context_ended_beside_a_timing"])
def test_the_gap_passes_the_judge_today(rmsnorm_harness: KernelEvaluator, name: str) -> None:
    report = rmsnorm_harness.evaluate_source_sync((GAPS / f"{name}.py").read_text())
    assert report["status"] == "ok" and report["passed"], report.get("error")


@pytest.mark.parametrize("path", sorted(GAPS.glob("*.py")), ids=lambda p: p.stem)
def test_the_screen_refuses_every_gap(path: Path) -> None:
    passed = audit(path.read_text(), Level.SCREEN, "kernels/rmsnorm_fwd").passed
    assert passed is (path.stem in SCREEN_PASSES)
