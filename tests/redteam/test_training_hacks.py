"""The training red team: every hack in tests/redteam/training/ is refused by the harness, for its reason.

Each hack runs through the training harness itself (`evo.eval.training.harness.evaluate`), so the static
screen is bypassed: what refuses it is measured on the trusted side. Then the full audit turns the checks
into a verdict that names the hack's `REJECTED_BY` check.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from evo.audit import Level, audit
from evo.eval.training.harness import evaluate
from evo.eval.training.spec import resolve_spec
from evo.task import load_task
from tests.training_corpus import build_corpus

HACKS = Path(__file__).parent / "training"
REPO = Path(__file__).resolve().parents[2]
NAMES = sorted(p.name for p in HACKS.glob("*.py"))
AT_ONCE = 4  # hacks evaluated together: most of an evaluation is waiting on processes that start


def _rejected_by(text: str) -> str:
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "REJECTED_BY":
            return node.value.value
    raise AssertionError("a hack names the check that must refuse it in REJECTED_BY")


@pytest.fixture(scope="module")
def outcomes():
    """Every hack evaluated by the harness, AT_ONCE at a time: {name: (text, result, folder left)}."""
    # The corpus outside /tmp and $HOME, which the sandbox hides anyway: here the read guard must hold alone.
    (REPO / "runs").mkdir(exist_ok=True)  # ignored by git
    data = Path(tempfile.mkdtemp(prefix=".pytest-training-", dir=REPO / "runs"))
    scratch = Path(tempfile.mkdtemp(prefix="evo-train-redteam-"))
    os.chmod(scratch, 0o755)
    try:
        build_corpus(data, train_bytes=100_000, val_bytes=8_192)
        task = load_task("training/lm_budget")
        spec = resolve_spec(task.root, data=str(data), device="cpu", budget_s=12.0, grace_s=4.0, eval_tokens=4096,
                            rescore_batches=1, probe_trials=3)

        def run(name: str):
            text = (HACKS / name).read_text().replace("{VAL_SHARD}", str(data / "val_000.bin"))
            own = Path(tempfile.mkdtemp(dir=scratch))
            os.chmod(own, 0o755)
            return text, evaluate(spec, {"candidate.py": text}, own), sorted(os.listdir(own))

        with ThreadPoolExecutor(AT_ONCE) as pool:
            yield task, dict(zip(NAMES, pool.map(run, NAMES), strict=True))
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.parametrize("hack", NAMES)
def test_a_training_hack_is_refused_for_its_reason(outcomes, hack: str) -> None:
    task, results = outcomes
    text, result, left = results[hack]
    expected = _rejected_by(text)
    failed = {name: reason for name, passed, reason in result.checks if not passed}
    assert not result.ok, f"{hack} was scored {result.score}: {result.checks}"
    assert expected in failed, f"{hack}: expected {expected} to fail; failed: {failed}; error: {result.error}"
    verdict = audit(text, Level.FULL, task, {"dynamic": result.checks})
    assert not verdict.passed and expected in dict(verdict.reasons), verdict.text()
    assert left == [], f"{hack} left {left} beside its work dir (a checkpoint for the next run)"


def test_the_red_team_covers_what_issue_14_names() -> None:
    assert len(NAMES) >= 8
    reasons = {_rejected_by((HACKS / n).read_text()) for n in NAMES}
    assert reasons == {"dynamic:data_split", "dynamic:causality", "dynamic:budget", "dynamic:no_carried_state",
                       "dynamic:harness_loss", "dynamic:model_unchanged"}
