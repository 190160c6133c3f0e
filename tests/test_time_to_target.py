"""Time to target on real processes: the seed reaches the CPU target (p < 0.01, full audit) and cannot reach a
tight one (the cascade stops after its first seed), the t-test both ways on the seed's real losses, the record
timed again before a faster candidate replaces it, the strong lm_budget seed through the full audit, and
`evo run --budget-s`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evo.config import RunConfig
from evo.errors import EvoError
from evo.eval.families import family_of
from evo.eval.pipeline import evaluate_source, verdict_of
from evo.eval.training.spec import DATA_ENV, resolve_spec
from evo.eval.training.target import TimeToTargetEvaluator, decide, resolve_rule
from evo.program import MAIN_FILE
from evo.task import load_task
from tests.training_corpus import build_corpus

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "tasks" / "training" / "time_to_target" / "seed.py"
STRONG = REPO / "tasks" / "training" / "lm_budget" / "seeds" / "strong.py"
SMOKE = {"device": "cpu", "eval_tokens": 4096, "rescore_batches": 1, "probe_trials": 2}
CHECKS = {"dynamic:causality", "dynamic:data_split", "dynamic:budget", "dynamic:no_carried_state",
          "dynamic:harness_loss", "dynamic:model_unchanged"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus"), train_bytes=200_000, val_bytes=8_192)


def _seeds_trained(checks: list[tuple[str, bool, str]]) -> set[str]:
    """The seeds the harness ran, read from its own checks (each reason starts with "seed N:")."""
    return {reason.split(":")[0] for _, _, reason in checks}


def test_the_task_is_timed_and_its_cpu_rule_is_the_smoke_one(corpus: Path) -> None:
    task = load_task("training/time_to_target")
    assert family_of(task).timed  # so the engine re-times its elites when a run resumes (evo/retiming.py)
    rule = resolve_rule(task.root, "cpu")
    assert (rule.target_bpb, rule.seeds, rule.alpha) == (4.5, 2, 0.01)
    assert resolve_rule(task.root, "cuda").seeds == 6
    assert resolve_spec(task.root, device="cpu", data=str(corpus)).budget_s == 60
    with pytest.raises(EvoError, match="seeds >= 2"):
        resolve_rule(task.root, "cpu", seeds=1)


@pytest.mark.slow  # 20-30 s end to end: `make test-slow` (keeps `make test` under 20 minutes)
def test_the_seed_reaches_the_target_with_p_below_001_and_passes_the_full_audit(corpus: Path, tmp_path: Path) -> None:
    result = evaluate_source("training/time_to_target", SEED.read_text(), scratch=tmp_path, data=str(corpus), **SMOKE)
    assert result.ok, result.error
    assert verdict_of(result).passed
    assert CHECKS <= {name for name, passed, _ in result.checks if passed}
    assert _seeds_trained(result.checks) == {"seed 0", "seed 1"}
    m = result.metrics
    assert m["seeds_trained"] == 2 and m["val_bpb"] < 4.5 and m["p_value"] < 0.01
    assert result.score == -m["train_s"] and m["train_s"] == m["train_s_measured"]  # the first: no record yet
    assert 0 < m["train_s"] < 60 + 4
    assert os.listdir(tmp_path) == []

    # The t-test on these real losses, both ways: the target they beat, and ones they do not.
    losses = [row["val_bpb"] for row in result.report["seeds"]]
    assert len(losses) == 2 and losses[0] != losses[1]
    assert decide(losses, 4.5, 0.01).valid
    above = decide(losses, max(losses) + 1e-3, 0.01)  # every seed below it, the mean not significantly so
    assert not above.valid and 0.01 <= above.p_value < 0.5, above.reason
    assert not decide(losses, min(losses) - 0.05, 0.01).valid


def test_the_cascade_stops_after_the_first_seed_when_it_misses_the_target(corpus: Path, tmp_path: Path) -> None:
    result = evaluate_source("training/time_to_target", SEED.read_text(), scratch=tmp_path, data=str(corpus),
                             target_bpb=2.0, **SMOKE)
    assert not result.ok and result.failure == "invalid"
    assert "no further seed was trained" in result.error
    assert _seeds_trained(result.checks) == {"seed 0"} and result.metrics["seeds_trained"] == 1
    assert 2.0 < result.metrics["val_bpb"] < 8.0
    assert "p_value" not in result.metrics  # no test was made


UNIFORM = '''
import torch
import torch.nn as nn

WORK = 0  # evo: int(0, 2000)


class Uniform(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        return self.scale * torch.ones(*idx.shape, self.vocab_size)


def build_model(info):
    return Uniform(info.vocab_size)


def train(data, budget):
    a = torch.randn(256, 256)
    for _ in range(WORK):  # a slower recipe for the same model: matrix products thrown away
        a = torch.tanh(a @ a)
    return build_model(data)
'''


@pytest.mark.slow  # six trainings and four scorings: about 70 s on 2 busy cores
def test_the_record_is_timed_again_before_a_faster_candidate_replaces_it(corpus: Path, tmp_path: Path) -> None:
    # A uniform model scores exactly 8 bpb on every seed: below a target of 8.5 with no spread (p = 0).
    task = load_task("training/time_to_target")
    spec = resolve_spec(task.root, data=str(corpus), **{**SMOKE, "eval_tokens": 2048, "probe_trials": 1})
    evaluator = TimeToTargetEvaluator(spec, resolve_rule(task.root, "cpu", target_bpb=8.5), 1, tmp_path / "s")
    slow, fast = UNIFORM.replace("WORK = 0 ", "WORK = 800 "), UNIFORM
    try:
        first = evaluator.evaluate_files({MAIN_FILE: slow}, tmp_path)
        assert first.ok, first.error
        assert "record_retimed_s" not in first.metrics and evaluator.record.files[MAIN_FILE] == slow
        second = evaluator.evaluate_files({MAIN_FILE: fast}, tmp_path)
        assert second.ok, second.error
    finally:
        evaluator.close()
    m = second.metrics
    assert m["train_s_measured"] < first.metrics["train_s"]  # it beat the record's time, so the record ran again
    assert m["record_train_s"] == first.metrics["train_s"] and m["record_retimed_s"] > m["train_s_measured"]
    assert m["train_s"] == pytest.approx(m["train_s_measured"] * m["record_train_s"] / m["record_retimed_s"])
    assert evaluator.record.files[MAIN_FILE] == fast and evaluator.record.fitness_s == m["train_s"]


@pytest.mark.slow  # a second seed through the full audit: make test keeps within its 20 minutes
def test_the_strong_lm_budget_seed_trains_and_passes_the_full_audit(corpus: Path, tmp_path: Path) -> None:
    assert STRONG in load_task("training/lm_budget").seed_paths()
    result = evaluate_source("training/lm_budget", STRONG.read_text(), scratch=tmp_path, data=str(corpus),
                             budget_s=10, **SMOKE)
    assert result.ok, result.error
    assert verdict_of(result).passed
    assert CHECKS <= {name for name, passed, _ in result.checks if passed}
    assert result.metrics["val_bpb"] < 6.0 and result.metrics["train_s"] <= 10 + 4


def test_budget_s_is_a_run_option_checked_like_the_others() -> None:
    assert RunConfig(train_budget_s=30).train_budget_s == 30.0
    with pytest.raises(EvoError, match="train_budget_s"):
        RunConfig(train_budget_s=0)
    out = subprocess.run([sys.executable, "-m", "evo", "run", "--help"], capture_output=True, text=True, cwd=REPO,
                         check=True)
    assert "--budget-s" in out.stdout


@pytest.mark.slow
def test_evo_run_budget_s_sets_the_training_budget_and_is_kept_with_the_run(corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, DATA_ENV: str(corpus), "EVO_TRAIN_DEVICE": "cpu"}
    env.pop("EVO_TRAIN_BUDGET_S", None)
    run_dir = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "evo", "run", "training/lm_budget", "--run-dir", str(run_dir),
                    "--budget", "1", "--workers", "1", "--budget-s", "6", "--quiet"], env=env, cwd=REPO, check=True,
                   timeout=600)
    from evo.store.sqlite import Store

    store = Store(run_dir / "evo.db", readonly=True)
    try:
        assert store.get_meta("config")["train_budget_s"] == 6.0
        trained = [p for p in store.best_programs() if p.metrics.get("train_s")]
        assert trained and all(4.0 < p.metrics["train_s"] <= 6 + 4 for p in trained)  # not the task's 20 s
    finally:
        store.close()


@pytest.mark.slow
def test_evo_run_time_to_target_through_the_pipeline(corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, DATA_ENV: str(corpus), "EVO_TRAIN_DEVICE": "cpu"}
    run_dir = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "evo", "run", "training/time_to_target", "--run-dir", str(run_dir),
                    "--budget", "1", "--workers", "1", "--quiet"], env=env, cwd=REPO, check=True, timeout=600)
    from evo.store.sqlite import Store

    store = Store(run_dir / "evo.db", readonly=True)
    try:
        best = store.best_programs()
        assert best and best[0].metrics["p_value"] < 0.01 and best[0].score == -best[0].metrics["train_s"]
    finally:
        store.close()
