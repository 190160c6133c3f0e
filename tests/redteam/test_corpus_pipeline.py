"""The whole corpus through the evaluation pipeline (what `evo eval` runs), on CPU with Triton's interpreter.

Every hack of `hacks/` and every tamperer of `tamper/` fails (the screen, or the harness and the full audit);
the seed and every honest variant of `tests/honest/variants/` pass with a `pass` verdict. One hack and one
honest variant also go through the `evo eval` command itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from evo.eval.backends.kernel import KernelEvaluator
from evo.eval.bench import BenchConfig
from evo.eval.pipeline import evaluate_source, verdict_of
from evo.task import load_task

REPO = Path(__file__).resolve().parents[2]
HACKS = sorted((REPO / "tests" / "redteam" / "hacks").glob("*.py")) + \
    sorted(p for p in (REPO / "tests" / "redteam" / "tamper").glob("*.py") if p.stem not in ("loopback_socket", "unix_socket_path"))
HONEST = sorted((REPO / "tests" / "honest" / "variants").glob("*.py")) + [REPO / "kernels" / "rmsnorm_fwd.py"]
TASK = "kernels/rmsnorm_fwd"
# Caught on the H100 only (benchmarks/redteam_gpu.py): the 1% of rows it skips are none at the CPU shapes.
GPU_ONLY = {"skip_rows"}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelEvaluator]:
    ev = KernelEvaluator(load_task(TASK), 1, tmp_path_factory.mktemp("corpus"), devices=["cpu"],
                         config=BenchConfig(iters=2, warmup=1, compile_baseline=False), parallel_per_device=2)
    yield ev
    ev.close()


@pytest.mark.parametrize("path", HACKS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_hack_fails_through_the_pipeline(harness: KernelEvaluator, path: Path) -> None:
    if path.stem in GPU_ONLY:
        pytest.skip("shows at the real shapes only: run on a GPU by benchmarks/redteam_gpu.py")
    result = evaluate_source(harness.task, path.read_text(), backend=harness)
    verdict = verdict_of(result)
    assert not result.ok and result.failure in ("audit", "invalid", "error"), (result.failure, result.error)
    assert verdict is not None and not verdict.passed, result.error


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_every_honest_candidate_passes_through_the_pipeline(harness: KernelEvaluator, path: Path) -> None:
    result = evaluate_source(harness.task, path.read_text(), backend=harness)
    verdict = verdict_of(result)
    assert result.ok, result.error
    assert verdict is not None and verdict.passed and "dynamic:time_bound" in verdict.checks


def _evo_eval(path: Path) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([str(Path(sys.executable).parent / "evo"), "eval", TASK, str(path), "--json"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_evo_eval_gives_the_same_verdicts() -> None:
    hack = _evo_eval(REPO / "tests" / "redteam" / "tamper" / "forged_event_time.py")
    honest = _evo_eval(HONEST[0])
    assert "fail" in json.dumps(hack.get("verdict", {})).lower(), hack
    assert '"passed": true' in json.dumps(honest.get("verdict", {})).lower(), honest
