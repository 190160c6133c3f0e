"""The evaluation pipeline on real components: screen, backend, family score, full audit, verdict.

CPU tasks run in the real sandbox; kernels on the real harness with Triton's interpreter (no GPU needed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evo.audit import DYNAMIC_CHECKS, Level
from evo.errors import EvoError
from evo.eval.backends.base import EvalResult
from evo.eval.backends.local import LocalEvaluator
from evo.eval.families import FAMILIES, InvalidJob, family_of
from evo.eval.pipeline import Pipeline, evaluate_source, verdict_of
from evo.program import MAIN_FILE, Program
from evo.task import Task, load_task

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "tasks" / "toy"
HACKS = REPO / "tests" / "redteam" / "hacks"
MATH = "math/min_max_distance_16"

POINTS = """
import numpy as np

def construct_points():
    xs, ys = np.meshgrid(np.arange(4.0), np.arange(4.0))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)
"""

# Would sleep 30 s and leave a file behind if it ran: the screen must refuse it first.
SPAWNS = POINTS + """
import subprocess
import time
time.sleep(30)
subprocess.run(["true"])
"""


class CountingLocal(LocalEvaluator):
    """The real local backend, counting the jobs that reach it."""

    calls = 0

    async def evaluate(self, program: Program) -> EvalResult:
        self.calls += 1
        return await super().evaluate(program)


def write_task(root: Path, family: str | None, reference: str | None = None) -> Task:
    """A task folder with the min/max-distance reference and `family = ...` (none: the key left out)."""
    root.mkdir(parents=True)
    line = "" if family is None else f'family = "{family}"\n'
    (root / "task.toml").write_text(f'description = "test task"\n{line}objective = "minimize"\nmetric = "ratio"\n'
                                    "[evaluation]\ntimeout_s = 10\n")
    (root / "reference.py").write_text(reference or (REPO / "tasks" / MATH / "reference.py").read_text())
    return Task(f"{root.parent.name}/{root.name}", root)


# ------------------------------------------------------------------------------------------- families


def test_every_task_names_a_registered_family() -> None:
    from evo.task import list_tasks

    families = {name: family_of(load_task(name)).name for name in list_tasks()}
    assert families["math/circle_packing_26"] == "math" and families["kernels/rmsnorm_fwd"] == "kernels"
    assert set(families.values()) <= set(FAMILIES)
    assert family_of(load_task(str(FIXTURES / "quadratic"))).name == "math"
    assert family_of(load_task(str(FIXTURES / "tiny_lm"))).name == "training"


@pytest.mark.parametrize("family", ["kernal", None], ids=["unknown", "missing"])
def test_a_bad_or_missing_family_is_a_one_line_error(tmp_path: Path, family: str | None) -> None:
    task = write_task(tmp_path / "math" / "bad", family)
    for attempt in (lambda: family_of(task), lambda: Pipeline(task)):
        with pytest.raises(EvoError) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message
        assert str(tmp_path / "math" / "bad" / "task.toml") in message and "family" in message
        assert "kernels, math, training" in message
        assert ("'kernal'" in message) if family else ("missing" in message)


def test_families_own_their_checks_and_fidelities() -> None:
    assert FAMILIES["training"].dynamic_checks == ("dynamic:causality", "dynamic:data_split", "dynamic:budget",
                                                  "dynamic:no_carried_state", "dynamic:harness_loss",
                                                  "dynamic:model_unchanged")
    assert DYNAMIC_CHECKS["dynamic:causality"].applies_to("training")
    assert "dynamic:input_mutation" in FAMILIES["kernels"].dynamic_checks
    assert "dynamic:causality" not in FAMILIES["kernels"].dynamic_checks and FAMILIES["math"].dynamic_checks == ()
    assert [f.name for f in FAMILIES["kernels"].fidelities] == ["correctness", "timing"]
    assert [f.name for f in FAMILIES["training"].fidelities] == ["short", "full"]
    assert FAMILIES["kernels"].fidelity().name == "timing"  # the whole evaluation by default


def test_a_job_carries_contents_and_the_task_hash_never_a_path() -> None:
    task = load_task(MATH)
    job = family_of(task).job(task, Program(source=POINTS))
    assert job.files == {MAIN_FILE: POINTS} and job.task == MATH and len(job.task_hash) == 32
    assert job.program.source == POINTS
    with pytest.raises(InvalidJob, match="leaves the program directory"):
        family_of(task).job(task, Program(source={MAIN_FILE: POINTS, "../escape.py": ""}))


def test_the_local_pool_takes_the_job_and_refuses_a_task_folder_that_differs(tmp_path: Path) -> None:
    task = load_task(MATH)
    backend = CountingLocal(task, 1, tmp_path, score=False)
    try:
        job = family_of(task).job(task, Program(source=POINTS))
        stale = dataclasses.replace(job, task_hash="0" * 32)
        with pytest.raises(EvoError, match="differs here from the job's"):
            asyncio.run(backend.run(stale))
        with pytest.raises(EvoError, match="not 'math/other'"):
            asyncio.run(backend.run(dataclasses.replace(job, task="math/other")))
        assert backend.calls == 0  # refused before anything ran
        with Pipeline(task, backend) as pipeline:  # the pipeline hands the pool the job itself
            assert pipeline.evaluate_sync(Program(source=POINTS)).ok and backend.calls == 1
    finally:
        backend.close()


class WholeOnly:
    """A backend without `run`: it sees programs only, so it can run the last rung and no other."""

    workers = 1

    async def evaluate(self, program: Program) -> EvalResult:
        return EvalResult(True, 1.0)

    def close(self) -> None:
        pass


def test_a_rung_reaches_the_backend_in_the_job_and_one_that_cannot_run_it_says_so() -> None:
    task = load_task("kernels/softmax_fwd")
    with Pipeline(task, WholeOnly()) as pipeline:  # type: ignore[arg-type]
        with pytest.raises(EvoError, match="runs only the whole evaluation .'timing'., not the rung 'correctness'"):
            pipeline.evaluate_sync(Program(source="x = 1\n"), "correctness")
        with pytest.raises(KeyError, match="no fidelity 'fast'"):
            pipeline.evaluate_sync(Program(source="x = 1\n"), "fast")
    job = FAMILIES["training"].job(load_task("training/lm_budget"), Program(source="x = 1\n"), "short")
    assert job.fidelity == "short" and job.settings == {"budget_fraction": 0.1}


# ------------------------------------------------------------------------------------ CPU (the sandbox)


def test_a_screen_failure_never_runs_the_candidate(tmp_path: Path) -> None:
    task = load_task(MATH)
    backend = CountingLocal(task, 1, tmp_path, score=False)
    with Pipeline(task, backend) as pipeline:
        start = time.perf_counter()
        result = pipeline.evaluate_sync(Program(source=SPAWNS))
        assert time.perf_counter() - start < 10
        assert backend.calls == 0
        assert not result.ok and result.failure == "audit" and "processes" in (result.error or "")
        verdict = verdict_of(result)
        assert verdict is not None and verdict.level is Level.SCREEN and "processes" in verdict.failed
        honest = pipeline.evaluate_sync(Program(source=POINTS))
        assert backend.calls == 1 and honest.ok, honest


def test_the_honest_math_seed_gets_a_pass_verdict_on_its_result() -> None:
    seed = (REPO / "tasks" / "math" / "circle_packing_26" / "seed.py").read_text()
    result = evaluate_source("math/circle_packing_26", seed)
    assert result.ok and result.score is not None and result.outputs is None, result
    verdict = json.loads(result.verdict or "{}")
    assert verdict["passed"] and verdict["level"] == "full" and "processes" in verdict["checks"]


def test_a_write_outside_fails_and_a_guard_refusal_fails_the_audit(tmp_path: Path) -> None:
    task = load_task(str(FIXTURES / "quadratic"))  # allows file writes: the sandbox stands behind the audit
    target = REPO / "escaped-by-test_pipeline.txt"
    source = f"import pathlib\n\ndef solve():\n    pathlib.Path({str(target)!r}).write_text('x')\n    return [0.3] * 4\n"
    result = evaluate_source(task, source)
    assert not result.ok and result.failure == "error" and not target.exists(), result
    # Where Landlock (not a read-only mount) refuses it, the local backend reports `dynamic:fs_guard`, and the
    # full audit folds that in (see tests/test_fs_guard.py for the refusal itself).
    refused = EvalResult(False, failure="error", error="exited with code 1: dynamic:fs_guard: refused",
                         checks=[("dynamic:fs_guard", False, "refused by the sandbox: [Errno 13]")])
    with Pipeline(task, LocalEvaluator(task, 1, tmp_path)) as pipeline:
        decided = pipeline.decide(source, refused)
    verdict = verdict_of(decided)
    assert decided.failure == "error" and verdict is not None and verdict.failed == ["dynamic:fs_guard"]


def test_a_training_task_gets_its_familys_checks_at_publish_level(tmp_path: Path) -> None:
    task = load_task(str(FIXTURES / "tiny_lm"))  # under toy/: the family is the one its task.toml names
    honest = "def train():\n    return 2.5\n"
    with pytest.raises(EvoError, match="no training data.*evo data prepare"):  # the harness needs a data folder
        Pipeline(task)
    full = evaluate_source(task, honest, backend=LocalEvaluator(task, 1, tmp_path, score=False))
    assert full.ok and full.score == -2.5 and verdict_of(full).passed, full  # type: ignore[union-attr]
    with Pipeline(task, LocalEvaluator(task, 1, tmp_path, score=False), level="publish") as pipeline:
        result = pipeline.evaluate_sync(Program(source=honest))
    verdict = verdict_of(result)
    assert not result.ok and result.failure == "audit"
    training_checks = FAMILIES["training"].dynamic_checks
    assert verdict is not None and verdict.level is Level.PUBLISH and verdict.failed == list(training_checks)
    assert "reported no result" in dict(verdict.reasons)["dynamic:causality"]
    # Reported by the harness, it counts.
    measured = EvalResult(True, -2.5, checks=[(name, True, "") for name in training_checks])
    with Pipeline(task, LocalEvaluator(task, 1, tmp_path), level="publish") as pipeline:
        assert verdict_of(pipeline.decide(honest, measured)).passed  # type: ignore[union-attr]


def test_publish_level_asks_a_kernel_for_every_dynamic_check(tmp_path: Path) -> None:
    task = load_task("kernels/rmsnorm_fwd")
    seed = (REPO / "kernels" / "rmsnorm_fwd.py").read_text()
    with Pipeline(task, LocalEvaluator(task, 1, tmp_path), level=Level.PUBLISH) as pipeline:
        bare = pipeline.decide(seed, EvalResult(True, 1.0))
        assert bare.failure == "audit" and "reported no result" in (bare.error or "")
        every = [(name, True, "") for name in family_of(task).dynamic_checks]
        assert pipeline.decide(seed, EvalResult(True, 1.0, checks=every)).ok


# ------------------------------------------------------------------- kernels (the harness, interpreted)


@pytest.fixture(scope="module")
def kernel_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    from evo.eval.bench import BenchConfig

    pipeline = Pipeline(load_task("kernels/rmsnorm_fwd"), workers=1, scratch=tmp_path_factory.mktemp("kernels"),
                        devices=["cpu"], config=BenchConfig(iters=2, warmup=1, compile_baseline=False),
                        parallel_per_device=1)
    yield pipeline
    pipeline.close()


def test_the_honest_kernel_seed_passes_with_the_harness_checks(kernel_pipeline: Pipeline) -> None:
    result = kernel_pipeline.evaluate_sync(Program(source=(REPO / "kernels" / "rmsnorm_fwd.py").read_text()))
    assert result.ok, result
    verdict = verdict_of(result)
    assert verdict is not None and verdict.passed and verdict.level is Level.FULL
    assert {"dynamic:input_mutation", "dynamic:timer_integrity"} <= set(verdict.checks)
    assert result.report is not None and result.report["workloads"]


def test_a_kernel_that_passes_the_screen_but_fails_a_dynamic_check_fails(kernel_pipeline: Pipeline) -> None:
    hack = (HACKS / "inplace_input.py").read_text()
    assert kernel_pipeline.screen(Program(source=hack)).passed
    result = kernel_pipeline.evaluate_sync(Program(source=hack))
    verdict = verdict_of(result)
    assert not result.ok and result.failure in ("audit", "invalid"), result
    assert verdict is not None and not verdict.passed and "dynamic:input_mutation" in verdict.failed


def test_a_kernel_evaluator_passed_as_the_backend_is_audited_by_the_pipeline(kernel_pipeline: Pipeline, tmp_path: Path) -> None:
    from evo.eval.backends.kernel import KernelEvaluator

    harness = kernel_pipeline.backend
    backend = KernelEvaluator(kernel_pipeline.task, 1, tmp_path, config=harness.config, pool=harness.pool)  # type: ignore[attr-defined]
    with Pipeline(kernel_pipeline.task, backend) as pipeline:
        result = pipeline.evaluate_sync(Program(source=(HACKS / "inplace_input.py").read_text()))
    verdict = verdict_of(result)
    assert not result.ok and verdict is not None and "dynamic:input_mutation" in verdict.failed, result


def test_a_kernel_failing_the_screen_never_reaches_the_harness(kernel_pipeline: Pipeline) -> None:
    hack = (HACKS / "os_system_alias.py").read_text()
    result = kernel_pipeline.evaluate_sync(Program(source=hack))
    verdict = verdict_of(result)
    assert result.failure == "audit" and verdict is not None and verdict.level is Level.SCREEN
    assert result.report is None  # the harness never saw it
