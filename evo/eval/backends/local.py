"""Local backend: each evaluation in a fresh sandboxed child process, `workers` at a time."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from evo.audit import Level, Verdict
from evo.audit.gate import passed_verdict
from evo.eval.backends.base import EvalResult
from evo.eval.child import OUTPUTS, SCREEN_FAILED, VERDICT
from evo.eval.sandbox import Limits, run_sandboxed
from evo.program import Program, source_files
from evo.task import Task

_REPO_ROOT = Path(__file__).resolve().parents[3]


def evaluate_in_sandbox(task: Task, program: Program, scratch: Path, screen: bool = True) -> EvalResult:
    """Write the program into a fresh directory, run it sandboxed, score its outputs here (trusted).

    The child audits the candidate before it runs it (see `evo/eval/child.py`); `screen=False` skips that,
    for tests of the layers behind the auditor only."""
    start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"{program.id[:12]}-", dir=scratch))
    try:
        os.chmod(workdir, 0o755)
        for rel, text in source_files(program.source).items():
            path = (workdir / rel).resolve()
            if not path.is_relative_to(workdir.resolve()):
                return EvalResult(False, failure="invalid", error=f"file path {rel!r} leaves the program directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        cfg = task.config
        limits = Limits(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, max_file_mb=cfg.max_output_mb)
        argv = [sys.executable, "-P", "-m", "evo.eval.child", str(task.root), *([] if screen else ["--no-screen"])]
        result = run_sandboxed(argv, workdir, limits, env={"PYTHONPATH": str(_REPO_ROOT)})
        wall = time.perf_counter() - start
        refused = _refusal(workdir, result.returncode)
        if refused is not None:
            return EvalResult(False, failure="audit", error=refused.text()[:2000], wall_s=wall,
                              verdict=refused.to_json())
        if result.status != "ok":
            tail = result.stderr_tail.strip().splitlines()
            detail = tail[-1] if tail else ""
            error = result.reason + (f": {detail}" if detail and result.status == "error" else "")
            return EvalResult(False, failure=result.status, error=error[:2000], wall_s=wall)
        try:
            with np.load(workdir / OUTPUTS, allow_pickle=False) as npz:
                outputs = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            return EvalResult(False, failure="invalid", error=f"unreadable outputs: {e}", wall_s=wall)
        outcome = task.score_outputs(outputs)
        if not outcome.valid:
            return EvalResult(False, metrics=outcome.metrics, failure="invalid", error=outcome.error, wall_s=wall)
        verdict = passed_verdict(task, Level.FULL) if screen else None
        return EvalResult(True, outcome.score, outcome.metrics, outcome.descriptors, wall_s=wall,
                          verdict=verdict.to_json() if verdict is not None else None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _refusal(workdir: Path, returncode: int | None) -> Verdict | None:
    """The auditor's failing verdict when the child refused to run the candidate (see `evo/eval/child.py`)."""
    if returncode != SCREEN_FAILED:
        return None
    try:
        verdict = Verdict.from_dict(json.loads((workdir / VERDICT).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return verdict if not verdict.passed else None


class LocalEvaluator:
    """`workers` sandboxed evaluations at once, each in its own process tree."""

    def __init__(self, task: Task, workers: int, scratch: Path):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.task = task
        self.workers = workers
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        os.chmod(self.scratch, 0o755)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evo-eval")

    async def evaluate(self, program: Program) -> EvalResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, evaluate_in_sandbox, self.task, program, self.scratch)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
