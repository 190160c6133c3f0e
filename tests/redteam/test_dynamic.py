"""The harness's dynamic checks catch hacks that pass the naive evaluation, on CPU (Triton's interpreter).

Each hack is a real candidate from `hacks/`; the harness must reject it with the named dynamic check,
while the honest seed passes every check. Hacks that need a GPU to show (side streams, skipped rows
at real sizes, timing tricks) are run on the H100 by `benchmarks/redteam_gpu.py` (see BENCHMARKS.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evo.audit import Verdict
from evo.eval import fs_guard
from evo.eval.backends.kernel import KernelEvaluator, report_to_result
from evo.eval.integrity import CORRECTNESS_CHECKS
from evo.eval.pipeline import Pipeline, verdict_of
from evo.program import MAIN_FILE

HACKS = Path(__file__).parent / "hacks"
REPO = Path(__file__).resolve().parents[2]

GUARDED = fs_guard.landlock_abi()[0] >= 1  # candidate children are Landlocked here (evo/eval/fs_guard.py)

CAUGHT_ON_CPU = {
    # CPU malloc does not always hand back the NaN-poisoned block, so the unwritten output may read as
    # garbage rather than NaN: any correctness check then (the H100 run names stale_memory).
    "stale_memory": None,
    "inplace_input": "dynamic:input_mutation",
    "lazy_output": "dynamic:output_type",
    "patched_timer": "dynamic:timer_integrity",
    "tf32_flag": "dynamic:global_flags",
    "warmup_counter": None,  # any correctness check: it answers wrongly once warm
    "state_file": None,  # the same: it replays a stale answer from its file
    # An fp16 sum of squares: within tolerance on the ordinary inputs, it overflows on the stress round's
    # (x scaled by 64); the interpreter's numpy fp16 overflows as the GPU's does.
    "fp16_compute": "dynamic:precision",
}


@pytest.fixture(scope="module")
def evaluator(rmsnorm_harness: KernelEvaluator) -> KernelEvaluator:
    return rmsnorm_harness


def _full_audit(ev: KernelEvaluator, source: str, report: dict) -> Verdict:
    """The pipeline's decision on a report the harness made with the screen bypassed."""
    result = report_to_result(report, 0.0)
    result.checks = [tuple(c) for c in report["checks"]]
    verdict = verdict_of(Pipeline(ev.task, ev).decide(source, result))
    assert verdict is not None
    return verdict


def _evaluate(ev: KernelEvaluator, path: Path, tmp_path: Path) -> dict:
    shutil.copy(path, tmp_path / MAIN_FILE)
    return ev.evaluate_path_sync(tmp_path)


def test_honest_seed_passes_every_dynamic_check(evaluator: KernelEvaluator, tmp_path: Path) -> None:
    report = _evaluate(evaluator, REPO / "kernels" / "rmsnorm_fwd.py", tmp_path)
    assert report["status"] == "ok" and report["passed"], report
    names = {n for n, _, _ in report["checks"]}
    assert {"dynamic:stale_memory", "dynamic:input_mutation", "dynamic:timer_integrity", "dynamic:files_left",
            "dynamic:thread_count", "dynamic:global_flags", "dynamic:fresh_inputs"} <= names
    verdict = _full_audit(evaluator, (REPO / "kernels" / "rmsnorm_fwd.py").read_text(), report)
    assert verdict.passed, verdict.text()


@pytest.mark.parametrize("hack", sorted(CAUGHT_ON_CPU))
def test_hack_is_rejected_by_the_harness(evaluator: KernelEvaluator, tmp_path: Path, hack: str) -> None:
    source = (HACKS / f"{hack}.py").read_text()
    report = _evaluate(evaluator, HACKS / f"{hack}.py", tmp_path)
    assert report["status"] == "ok", report
    failed = [n for n, ok, _ in report["checks"] if not ok]
    assert failed, f"{hack} passed the harness: {report}"
    if hack == "state_file" and GUARDED:
        # Under the filesystem guard its cache write is refused, so it cannot run at all; without the
        # guard it replays a stale answer in a later call and fails a correctness check.
        assert failed[:2] == ["runs", "dynamic:fs_guard"], report["checks"]
    elif CAUGHT_ON_CPU[hack] is not None:
        assert failed[0] == CAUGHT_ON_CPU[hack], report["checks"]
    else:
        assert failed[0] in CORRECTNESS_CHECKS + ("dynamic:warmup_invariance",), report["checks"]
    result = report_to_result(report, 0.0)
    assert not result.ok and result.failure in ("audit", "invalid")
    verdict = _full_audit(evaluator, source, report)
    # The gate names the harness's own "runs" check `dynamic:runs`.
    assert not verdict.passed and any(name in (failed[0], f"dynamic:{failed[0]}") for name, _ in verdict.reasons)


def test_precision_failure_names_the_stress_round(evaluator: KernelEvaluator, tmp_path: Path) -> None:
    report = _evaluate(evaluator, HACKS / "fp16_compute.py", tmp_path)
    failed = [(n, r) for n, ok, r in report["checks"] if not ok]
    assert failed and failed[0][0] == "dynamic:precision", report["checks"]
    reason = failed[0][1]
    assert "wrong on inputs scaled by 64 (x: activations of magnitude ~" in reason, reason
    assert "massive activations" in reason and "differs at" in reason, reason


STRESS_CHECK = """
import sys
from pathlib import Path
import torch
from evo.eval.kernel_spec import compare_outputs, stress_inputs
from evo.task import load_module, load_task
ref = load_task("kernels/rmsnorm_fwd").reference
bad = []
for path in sys.argv[1:]:
    mod = load_module(Path(path), "candidate_" + Path(path).stem)
    for i, params in enumerate([*ref.SPEC.small, {"T": 5, "D": 64}]):
        inputs = stress_inputs(ref.SPEC, ref.make_inputs(dict(params), 30 + i, "cpu"))
        expected = ref.run(*[x.clone() for x in inputs])
        reason = compare_outputs(mod.run(*[x.clone() for x in inputs]), expected, ref.SPEC.atol, ref.SPEC.rtol)
        if reason:
            bad.append(f"{Path(path).name} {params}: {reason}")
print("\\n".join(bad) or "ok")
"""


def test_honest_variants_pass_the_stress_round() -> None:
    """No false positives: the optimised RMSNorm variants of tests/honest stay correct on scaled inputs."""
    variants = sorted((REPO / "tests" / "honest" / "variants").glob("*.py"))
    assert variants
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", STRESS_CHECK, *map(str, variants)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout[-3000:] + proc.stderr[-3000:]
