"""The harness's dynamic checks catch hacks that pass the naive evaluation, on CPU (Triton's interpreter).

Each hack is a real candidate from `hacks/`; the harness must reject it with the named dynamic check,
while the honest seed passes every check. Hacks that need a GPU to show (side streams, skipped rows
at real sizes, timing tricks) are run on the H100 by `benchmarks/redteam_gpu.py` (see BENCHMARKS.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from evo.eval.backends.kernel import KernelEvaluator, report_to_result
from evo.eval.bench import CORRECTNESS_CHECKS, BenchConfig
from evo.program import MAIN_FILE
from evo.task import load_task

HACKS = Path(__file__).parent / "hacks"
REPO = Path(__file__).resolve().parents[2]

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
}


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelEvaluator]:
    ev = KernelEvaluator(load_task("kernels/rmsnorm_fwd"), 1, tmp_path_factory.mktemp("kernel"), devices=["cpu"],
                         config=BenchConfig(iters=2, warmup=1, compile_baseline=False), parallel_per_device=1)
    yield ev
    ev.close()


def _evaluate(ev: KernelEvaluator, path: Path, tmp_path: Path) -> dict:
    shutil.copy(path, tmp_path / MAIN_FILE)
    return ev.evaluate_path_sync(tmp_path)


def test_honest_seed_passes_every_dynamic_check(evaluator: KernelEvaluator, tmp_path: Path) -> None:
    report = _evaluate(evaluator, REPO / "kernels" / "rmsnorm_fwd.py", tmp_path)
    assert report["status"] == "ok" and report["passed"], report
    names = {n for n, _, _ in report["checks"]}
    assert {"dynamic:stale_memory", "dynamic:input_mutation", "dynamic:timer_integrity", "dynamic:files_left",
            "dynamic:thread_count", "dynamic:global_flags", "dynamic:fresh_inputs"} <= names
    verdict = evaluator.full_audit((REPO / "kernels" / "rmsnorm_fwd.py").read_text(), report)
    assert verdict.passed, verdict.text()


@pytest.mark.parametrize("hack", sorted(CAUGHT_ON_CPU))
def test_hack_is_rejected_by_the_harness(evaluator: KernelEvaluator, tmp_path: Path, hack: str) -> None:
    source = (HACKS / f"{hack}.py").read_text()
    report = _evaluate(evaluator, HACKS / f"{hack}.py", tmp_path)
    assert report["status"] == "ok", report
    failed = [n for n, ok, _ in report["checks"] if not ok]
    assert failed, f"{hack} passed the harness: {report}"
    if CAUGHT_ON_CPU[hack] is not None:
        assert failed[0] == CAUGHT_ON_CPU[hack], report["checks"]
    else:
        assert failed[0] in CORRECTNESS_CHECKS + ("dynamic:warmup_invariance",), report["checks"]
    result = report_to_result(report, 0.0)
    assert not result.ok and result.failure in ("audit", "invalid")
    verdict = evaluator.full_audit(source, report)
    assert not verdict.passed and any(name == failed[0] for name, _ in verdict.reasons)
