"""A CPU task's candidate is screened on the trusted side before any of its code runs, and audited in full
after, by the pipeline; the sandboxed child and the local backend only run it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from evo.eval.backends.local import LocalEvaluator, evaluate_in_sandbox
from evo.eval.pipeline import Pipeline, evaluate_source
from evo.program import MAIN_FILE, Program
from evo.task import load_task

TASK = "math/min_max_distance_16"

HONEST = """
import time
import numpy as np

_GRID = {}  # a module-level cache: allowed for this task (a fresh process per evaluation)

def construct_points():
    start = time.perf_counter()  # a search with a time budget: clock reads are allowed here too
    xs, ys = np.meshgrid(np.arange(4.0), np.arange(4.0))
    _GRID["n"] = 16
    assert time.perf_counter() - start < 5
    return np.stack([xs.ravel(), ys.ravel()], axis=1)
"""

# Would take 30 s if it ran: the audit must refuse it first.
SPAWNS = """
import subprocess
import time
import numpy as np

time.sleep(30)
subprocess.run(["true"])

def construct_points():
    xs, ys = np.meshgrid(np.arange(4.0), np.arange(4.0))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)
"""

# A candidate folder that carries its own `evo` package: were the auditor imported where the candidate's
# files lie, it would be the candidate's (it passes everything) and the candidate would run.
FAKE_AUDITOR = {
    MAIN_FILE: SPAWNS,
    "evo/__init__.py": "",
    "evo/audit/__init__.py": (
        "class Level:\n    FULL = 'full'\n"
        "class _Pass:\n    passed = True\n"
        "def audit(*a, **k):\n    return _Pass()\n"
        "Verdict = _Pass\n"
    ),
}


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    return tmp_path


def test_an_honest_candidate_passes_with_a_full_verdict(scratch: Path) -> None:
    result = evaluate_source(load_task(TASK), HONEST, scratch=scratch)
    assert result.ok, result
    verdict = json.loads(result.verdict or "{}")
    assert verdict["passed"] and verdict["level"] == "full"
    assert "processes" in verdict["checks"] and "file_writes" in verdict["checks"]
    assert set(verdict["allowed"]) == {"sleep_and_clock", "module_state"}
    assert "sleep_and_clock" not in verdict["checks"]


@pytest.mark.parametrize("source", [SPAWNS, FAKE_AUDITOR], ids=["one_file", "own_evo_package"])
def test_a_candidate_failing_the_audit_never_runs(scratch: Path, source: object) -> None:
    start = time.perf_counter()
    result = evaluate_source(load_task(TASK), source, scratch=scratch)  # type: ignore[arg-type]
    assert time.perf_counter() - start < 20  # the 30 s sleep at import never happened
    assert not result.ok and result.failure == "audit", result
    verdict = json.loads(result.verdict or "{}")
    assert not verdict["passed"] and verdict["level"] == "screen"
    assert "processes" in {r["check"] for r in verdict["reasons"]}
    assert "subprocess" in (result.error or "")


def test_the_local_backend_runs_without_auditing(scratch: Path) -> None:
    source = HONEST.replace("import numpy as np", "import numpy as np\nimport threading", 1)
    audited = evaluate_source(load_task(TASK), source, scratch=scratch)
    assert audited.failure == "audit" and "threads" in (audited.error or "")
    bare = evaluate_in_sandbox(load_task(TASK), Program(source=source), scratch)
    assert bare.ok and bare.verdict is None, bare  # the backend builds no verdict: the pipeline does
    unscored = evaluate_in_sandbox(load_task(TASK), Program(source=source), scratch, score=False)
    assert unscored.ok and unscored.score is None and unscored.outputs is not None


def test_the_pipeline_stores_the_verdict_of_a_refused_candidate(scratch: Path) -> None:
    pipeline = Pipeline(load_task(TASK), LocalEvaluator(load_task(TASK), 2, scratch, score=False))
    assert pipeline.workers == 2

    async def both() -> list:
        return list(await asyncio.gather(pipeline.evaluate(Program(source=SPAWNS)),
                                         pipeline.evaluate(Program(source=HONEST))))
    try:
        refused, passed = asyncio.run(both())
    finally:
        pipeline.close()
    assert refused.failure == "audit" and json.loads(refused.verdict or "{}")["passed"] is False
    assert passed.ok and json.loads(passed.verdict or "{}")["passed"] is True
    assert passed.score is not None and passed.outputs is None  # scored by the family, outputs dropped
