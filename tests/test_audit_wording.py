"""Audit reasons speak of the task's family: a math candidate that reads the clock is told why a task scored on
its outputs refuses it and how its task may allow it; a kernel candidate keeps the kernel wording; a training
candidate gets training wording. Tasks are real folders (copies under a temporary directory); `evo eval` runs
as a real process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evo.audit import Level, audit
from evo.audit.rules import SCREEN_CHECK_NAMES, WHY
from evo.audit.wording import ALLOWABLE, MATH, TRAINING, why
from evo.task import load_task

REPO = Path(__file__).resolve().parents[1]

CLOCK = """
import time
import numpy as np

def construct_points():
    started = time.perf_counter()
    return np.zeros((16, 2))
"""

ASYNC = "import asyncio\n\ndef construct_points():\n    return asyncio.run(asyncio.sleep(0, 1))\n"
WRITES_OUTSIDE = "def construct_points():\n    open('/tmp/answers.txt', 'w').write('x')\n"
WRITES_INSIDE = "def construct_points():\n    open('scratch.txt', 'w').write('x')\n"


def _math_task(tmp_path: Path, allow: str | None = None) -> Path:
    """A copy of math/min_max_distance_16 outside the repository, with `[audit] allow` as given (none: removed)."""
    root = tmp_path / "mine" / "points16"
    shutil.copytree(REPO / "tasks" / "math" / "min_max_distance_16", root)
    toml = root / "task.toml"
    text = toml.read_text()
    text = text[: text.index("[audit]")] if "[audit]" in text else text
    if allow is not None:
        text += f"\n[audit]\nallow = [{allow}]\n"
    toml.write_text(text)
    return root


def _training_task(tmp_path: Path) -> Path:
    root = tmp_path / "training" / "tiny_lm"
    root.mkdir(parents=True)
    (root / "task.toml").write_text('description = "a tiny LM"\nfamily = "training"\nobjective = "minimize"\n'
                                    'metric = "seconds_to_target"\n')
    (root / "reference.py").write_text('"""No reference yet."""\n')
    return root


def _reason(verdict: object, check: str) -> str:
    reasons = dict(verdict.reasons)  # type: ignore[attr-defined]
    assert check in reasons, verdict
    return reasons[check]


def test_evo_eval_of_a_math_candidate_reading_the_clock_speaks_of_math(tmp_path: Path) -> None:
    task = _math_task(tmp_path)
    candidate = tmp_path / "points.py"
    candidate.write_text(CLOCK)
    done = subprocess.run([sys.executable, "-m", "evo", "eval", str(task), str(candidate)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    text = " ".join(done.stdout.split())  # rich wraps long lines
    assert done.returncode == 1, done.stderr
    assert "sleep_and_clock" in text and "line 6 calls `time.perf_counter`" in text
    assert "A math task is scored on what your program returns, not on time" in text
    assert '`[audit] allow = ["sleep_and_clock"]`' in text
    assert "kernel has no use" not in text and "harness" not in text


def test_the_allowance_in_task_toml_lets_the_same_candidate_through(tmp_path: Path) -> None:
    task = load_task(str(_math_task(tmp_path, allow='"sleep_and_clock"')))
    verdict = audit(CLOCK, Level.SCREEN, task)
    assert verdict.passed, verdict.text()
    assert verdict.allowed == ["sleep_and_clock"]


def test_a_kernel_candidate_keeps_the_kernel_wording() -> None:
    verdict = audit(CLOCK.replace("construct_points", "run"), Level.SCREEN, load_task("kernels/softmax_fwd"))
    reason = _reason(verdict, "sleep_and_clock")
    assert "A kernel has no use for the clock" in reason and "the harness times it" in reason
    assert "[audit] allow" not in reason  # a kernel task opens a real hole by allowing it: no hint


def test_a_training_candidate_gets_training_wording(tmp_path: Path) -> None:
    task = load_task(str(_training_task(tmp_path)))
    verdict = audit(CLOCK, Level.SCREEN, task)
    reason = _reason(verdict, "sleep_and_clock")
    assert "time it takes to reach the target loss" in reason
    assert "kernel" not in reason and "[audit] allow" not in reason


def test_the_hint_names_the_capability_found_and_only_what_the_family_may_allow(tmp_path: Path) -> None:
    task = load_task(str(_math_task(tmp_path)))
    asyncio_reason = _reason(audit(ASYNC, Level.SCREEN, task), "threads")
    assert '`[audit] allow = ["asyncio"]`' in asyncio_reason and "calling thread" in asyncio_reason
    inside = _reason(audit(WRITES_INSIDE, Level.SCREEN, task), "file_writes")
    assert '`[audit] allow = ["file_write"]`' in inside and "fresh working directory" in inside
    # Writing outside the working directory carries answers to later evaluations: never suggested.
    outside = _reason(audit(WRITES_OUTSIDE, Level.SCREEN, task), "file_writes")
    assert "outside the working directory" in outside and "[audit] allow" not in outside


KERNEL_WORDS = ("timer", "Triton", "run()", "harness", "kernel")
FAMILY_CHECKS = [c for c in SCREEN_CHECK_NAMES if c not in ("syntax", "entry_point", "fallback")]


@pytest.mark.parametrize("check", FAMILY_CHECKS)
def test_every_static_reason_has_math_words(check: str) -> None:
    """Every check a math candidate can fail explains itself without the kernel harness's vocabulary
    (`fallback` fires on kernel launches only; `entry_point` on kernel tasks only; `syntax` is the same everywhere)."""
    text = why(check, "math")
    if check == "sleep_and_clock":  # names the timed families as the reason for the default
        text = text.replace("timed tasks (kernels, training)", "")
    assert not [w for w in KERNEL_WORDS if w in text], text


@pytest.mark.parametrize("check", FAMILY_CHECKS)
def test_every_static_reason_has_training_words(check: str) -> None:
    text = why(check, "training")
    assert "run()" not in text and "timer" not in text, text


def test_the_families_own_words_differ_from_the_kernel_ones() -> None:
    for table in (MATH, TRAINING):
        assert set(table) <= set(WHY)
        assert not [c for c, text in table.items() if text == WHY[c]]


def test_allowable_names_are_names_the_gate_knows() -> None:
    from evo.audit.gate import known_names

    names = known_names()
    for family, table in ALLOWABLE.items():
        for check, allowed in table.items():
            assert check in names and allowed <= names, (family, check, allowed - names)
            assert why(check, family, sorted(allowed)[:1]).count("[audit] allow") == 1
