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
from pathlib import Path

import pytest

from evo.audit import Level, audit
from evo.eval.training.harness import evaluate
from evo.eval.training.spec import resolve_spec
from evo.task import load_task
from tests.training_corpus import build_corpus

HACKS = Path(__file__).parent / "training"
REPO = Path(__file__).resolve().parents[2]


def _rejected_by(text: str) -> str:
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "REJECTED_BY":
            return node.value.value
    raise AssertionError("a hack names the check that must refuse it in REJECTED_BY")


@pytest.fixture(scope="module")
def setting():
    # The corpus outside /tmp and $HOME, which the sandbox hides anyway: here the read guard must hold alone.
    (REPO / "runs").mkdir(exist_ok=True)  # ignored by git
    data = Path(tempfile.mkdtemp(prefix=".pytest-training-", dir=REPO / "runs"))
    build_corpus(data, train_bytes=100_000, val_bytes=8_192)
    task = load_task("training/lm_budget")
    spec = resolve_spec(task.root, data=str(data), device="cpu", budget_s=12.0, grace_s=4.0, eval_tokens=4096,
                        rescore_batches=1, probe_trials=3)
    scratch = Path(tempfile.mkdtemp(prefix="evo-train-redteam-"))
    os.chmod(scratch, 0o755)
    yield task, spec, scratch
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.parametrize("hack", sorted(p.name for p in HACKS.glob("*.py")))
def test_a_training_hack_is_refused_for_its_reason(setting, hack: str) -> None:
    task, spec, scratch = setting
    text = (HACKS / hack).read_text().replace("{VAL_SHARD}", str(Path(spec.data) / "val_000.bin"))
    expected = _rejected_by(text)
    own = Path(tempfile.mkdtemp(dir=scratch))
    os.chmod(own, 0o755)
    result = evaluate(spec, {"candidate.py": text}, own)
    failed = {name: reason for name, passed, reason in result.checks if not passed}
    assert not result.ok, f"{hack} was scored {result.score}: {result.checks}"
    assert expected in failed, f"{hack}: expected {expected} to fail; failed: {failed}; error: {result.error}"
    verdict = audit(text, Level.FULL, task, {"dynamic": result.checks})
    assert not verdict.passed and expected in dict(verdict.reasons), verdict.text()
    assert os.listdir(own) == [], f"{hack} left {os.listdir(own)} beside its work dir"
    if hack == "checkpoint_between_runs.py":  # and the next run finds nothing to start from
        assert not (own / "lm_checkpoint.pt").exists()
