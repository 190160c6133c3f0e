"""Local backend: each evaluation in a fresh sandboxed child process, `workers` at a time."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evo.eval.backends.base import EvalResult
from evo.eval.child import FS_GUARD, OUTPUT_LOG, OUTPUTS
from evo.eval.families.base import check_job_task
from evo.eval.sandbox import Limits, run_sandboxed
from evo.program import Program, source_files
from evo.task import Task

if TYPE_CHECKING:
    from evo.eval.families.base import Job

_REPO_ROOT = Path(__file__).resolve().parents[3]
OUTPUT_KEEP = 256 * 1024  # bytes of what a candidate printed that a result keeps (the last ones)


def evaluate_in_sandbox(task: Task, program: Program, scratch: Path, screen: bool = True,
                        score: bool = True) -> EvalResult:
    """Write the program into a fresh directory, run it sandboxed, read its outputs back here (trusted).

    It audits nothing and builds no verdict: the pipeline (`evo/eval/pipeline.py`) screens the candidate
    before this runs and audits it after. With `score` the task's trusted `evaluate` scores the outputs here;
    without, they come back unscored in `EvalResult.outputs`, for the task's family to score (the pipeline's
    way). A write the sandbox refused comes back as the failed dynamic check `dynamic:fs_guard`. `screen` is
    ignored (it is kept for callers that still pass it)."""
    del screen
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
        argv = [sys.executable, "-P", "-m", "evo.eval.child", str(task.root)]
        # The task's folder may lie where the sandbox hides everything (/tmp, a home): show it, read-only; and
        # its family's folder when that holds modules the reference imports (tasks/math/circle_packing.py).
        root = Path(task.root)
        shared = any(p.suffix == ".py" and p.is_file() for p in root.parent.iterdir())
        readable = [root.parent] if shared else [root]
        result = run_sandboxed(argv, workdir, limits, env={"PYTHONPATH": str(_REPO_ROOT)}, readable=readable)
        wall = time.perf_counter() - start
        printed = candidate_output(workdir, result.stdout_tail, result.stderr_tail)
        if result.status != "ok":
            tail = result.stderr_tail.strip().splitlines()
            detail = tail[-1] if tail else ""
            error = result.reason + (f": {detail}" if detail and result.status == "error" and detail not in
                                     result.reason else "")
            checks = [(FS_GUARD, False, detail[len(FS_GUARD) + 1:].strip())] if detail.startswith(FS_GUARD) else []
            return EvalResult(False, failure=result.status, error=error[:2000], wall_s=wall, checks=checks,
                              output=printed)
        try:
            with np.load(workdir / OUTPUTS, allow_pickle=False) as npz:
                outputs = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            return EvalResult(False, failure="invalid", error=f"unreadable outputs: {e}", wall_s=wall, output=printed)
        if not score:
            return EvalResult(True, wall_s=wall, outputs=outputs, output=printed)
        scored = score_outputs(task, outputs, wall)
        scored.output = printed
        return scored
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


STDERR_MISSED = "[the end of stderr, which the log above missed:]"  # where the log stopped, stderr's tail follows


def candidate_output(workdir: Path, stdout_tail: str = "", stderr_tail: str = "", keep: int = OUTPUT_KEEP) -> str:
    """The last `keep` bytes of what the candidate printed (the child's `output.log`, stdout and stderr in
    order), with the working directory's path taken out of it (`candidate.py`, not a temporary path).

    The log lies in the candidate's folder and is the candidate's to write: it is opened without following
    links and read only if it is a plain file, from its end, so that a candidate that printed gigabytes (or
    left a FIFO, or a link to a file of ours) costs this process `keep` bytes. It is shown to people, never
    believed. Without a log (the candidate wrote to the file descriptors directly, or died first) the
    sandbox's tails of stdout and stderr stand in."""
    text = ""
    try:
        fd = os.open(workdir / OUTPUT_LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode):
                size = info.st_size
                data = os.pread(fd, min(size, keep), max(0, size - keep))
                text = data.decode("utf-8", errors="replace")
                if size > keep:
                    text = (f"[... the first {size - keep} bytes of the candidate's output are not kept; "
                            f"these are the last {keep}]\n") + text.partition("\n")[2]
        except OSError:
            text = ""
        finally:
            os.close(fd)
    if not text.strip():
        text = stdout_tail + ("\n" if stdout_tail and not stdout_tail.endswith("\n") else "") + stderr_tail
    else:
        # The log stops where it hit the file-size limit (or the candidate wrote to fd 2 itself): the end of
        # stderr, where a traceback is, must not go missing then.
        end = stderr_tail.strip()[-200:]
        if end and end not in text:
            text += ("" if text.endswith("\n") else "\n") + STDERR_MISSED + "\n" + stderr_tail
    for prefix in {str(workdir), str(workdir.resolve())}:
        text = text.replace(prefix + os.sep, "")
    return text


def score_outputs(task: Task, outputs: dict[str, np.ndarray], wall_s: float = 0.0) -> EvalResult:
    """A candidate's outputs scored by the task's trusted `evaluate` (in this, the trusted, process)."""
    outcome = task.score_outputs(outputs)
    if not outcome.valid:
        return EvalResult(False, metrics=outcome.metrics, failure="invalid", error=outcome.error, wall_s=wall_s)
    return EvalResult(True, outcome.score, outcome.metrics, outcome.descriptors, wall_s=wall_s)


class LocalEvaluator:
    """`workers` sandboxed evaluations at once, each in its own process tree.

    `score=False` leaves the outputs unscored for the task family (the pipeline's backend is built so)."""

    def __init__(self, task: Task, workers: int, scratch: Path, score: bool = True):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.task = task
        self.workers = workers
        self.score = score
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        os.chmod(self.scratch, 0o755)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evo-eval")

    async def evaluate(self, program: Program) -> EvalResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: evaluate_in_sandbox(self.task, program, self.scratch,
                                                                                  score=self.score))

    async def run(self, job: Job) -> EvalResult:
        """The job, once its task is this pool's and the task's folder has the hash it was built against: the
        child is given the candidate's files from the message, never a path of the machine that built it."""
        check_job_task(self.task, job)
        return await self.evaluate(job.program)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
