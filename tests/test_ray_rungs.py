"""Evaluation rungs through the Ray backend, on a real local Ray cluster (`ray.cluster_utils.Cluster`): the job's
rung and its settings reach the actor's family backend (the training harness's `short` rung trains for a tenth
of the budget on the node, the kernel harness's `correctness` rung times nothing), and a job built against
another version of the task's folder is refused on the driver before anything is sent."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -e '.[dev]'")
from input_probe import SEEN_PRINTER, inputs_seen  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray_fixtures import REPO, RMSNORM_SOURCE, gpu_node, local_cluster, rmsnorm_on_gpu  # noqa: E402
from training_corpus import build_corpus  # noqa: E402

from evo.errors import EvoError  # noqa: E402
from evo.eval.backends.ray import RayEvaluator  # noqa: E402
from evo.eval.families import family_of  # noqa: E402
from evo.eval.pipeline import Pipeline  # noqa: E402
from evo.program import Program  # noqa: E402
from evo.task import load_task  # noqa: E402

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
SMOKE = {"device": "cpu", "eval_tokens": 4096, "rescore_batches": 1, "probe_trials": 2}
# A candidate that waits out whatever budget it is handed: its training time tells which rung it ran at.
PATIENT = (REPO / "tasks" / "training" / "lm_budget" / "seed.py").read_text().replace(
    "def train(data, budget):\n", "def train(data, budget):\n    while budget.remaining() > 0.5:\n        pass\n")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with local_cluster() as c:
        yield c


def test_the_short_rung_of_a_training_task_runs_on_the_actor_at_a_tenth_of_the_budget(
        cluster: Cluster, tmp_path: Path) -> None:
    assert "def train(data, budget):\n    while" in PATIENT
    corpus = build_corpus(tmp_path / "corpus", train_bytes=200_000, val_bytes=8_192)
    task = load_task("training/lm_budget")
    budget = 30.0
    evaluator = RayEvaluator(task, 1, tmp_path / "scratch",
                             actor_options={"data": str(corpus), "budget_s": budget, **SMOKE})
    pipeline = Pipeline(task, evaluator)
    try:
        assert evaluator.runs_rungs and evaluator.actors()[0]["backend"] == "TrainingEvaluator"
        short = pipeline.evaluate_sync(Program(source=PATIENT), "short")
        assert short.ok, short.error
        # a tenth of 30 s on the node (the harness's grace on top); the whole rung would wait ~30 s
        assert 1.0 < short.metrics["train_s"] < budget / 10 + 4.0, short.metrics
        assert ray.get(evaluator._members[0].handle.stats.remote())["done"] == 1
    finally:
        pipeline.close()


def test_the_kernel_harness_correctness_rung_runs_untimed_on_the_actor(cluster: Cluster, tmp_path: Path) -> None:
    node = gpu_node(cluster)
    task, evaluator = rmsnorm_on_gpu(tmp_path)
    pipeline = Pipeline(task, evaluator)
    try:
        source = RMSNORM_SOURCE.read_text()
        job = family_of(task).job(task, Program(source=source))
        with pytest.raises(EvoError, match="differs from the one sent to the Ray actors"):
            asyncio.run(evaluator.run(dataclasses.replace(job, task_hash="0" * 32)))
        stats = ray.get(evaluator._members[0].handle.stats.remote())
        assert stats["done"] == 0 and stats["in_flight"] == 0, "nothing reached the actor"
        first = pipeline.evaluate_sync(Program(source=source), "correctness")
        assert evaluator.runs_rungs
        assert first.ok and "sol_score" not in first.metrics, first.error
        assert all(row["time_s"] is None for row in first.report["workloads"]), first.report["workloads"]
        whole = pipeline.evaluate_sync(Program(source=source))  # the last rung: timed and scored
        assert whole.ok and "sol_score" in whole.metrics, whole.error
        assert ray.get(evaluator._members[0].handle.stats.remote())["done"] == 2
    finally:
        pipeline.close()
        cluster.remove_node(node)


def test_a_held_kernels_rerun_on_an_actor_draws_fresh_inputs(cluster: Cluster, tmp_path: Path) -> None:
    """The re-run of a held candidate reaches the actor's kernel harness as a run on fresh inputs: the candidate
    sees none of the inputs its first run on the actor showed it."""
    node = gpu_node(cluster)
    task, evaluator = rmsnorm_on_gpu(tmp_path)
    try:
        source = RMSNORM_SOURCE.read_text() + SEEN_PRINTER
        first = asyncio.run(evaluator.evaluate(Program(source=source)))
        fresh = asyncio.run(evaluator.evaluate_on_fresh_inputs(Program(source=source)))
        assert first.ok and fresh.ok, (first.error, fresh.error)
        seen, seen_fresh = (inputs_seen(r.report or {}, task.reference) for r in (first, fresh))
        assert seen and seen_fresh and not seen & seen_fresh
    finally:
        evaluator.close()
        cluster.remove_node(node)
