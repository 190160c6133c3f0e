"""Kernel backend: one zygote worker per GPU (`evo/eval/worker.py`), scoring against the speed of light.

The engine's side of the harness. It never imports CUDA itself: workers do the GPU work and report
times and check results; this side turns them into scores (trusted arithmetic), so a candidate never
reports its own score. On a machine without CUDA one CPU worker runs Triton's interpreter: correct
checks, meaningless times (the tests use it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from evo.errors import EvoError
from evo.eval.backends.base import EvalResult
from evo.eval.families.base import Job, check_job_task, task_hash
from evo.eval.integrity import CORRECTNESS_CHECKS
from evo.eval.peaks import peaks_for, sol_score, speed_of_light_s
from evo.eval.reference_data import NO_REFERENCE_YET, workloads_for
from evo.eval.timing import BenchConfig
from evo.program import MAIN_FILE, Program, source_files
from evo.task import TASKS_ENV, Task

_REPO_ROOT = Path(__file__).resolve().parents[3]
IMPOSSIBLE_FRACTION = 0.9  # a time under 0.9 T_SOL is a measurement the candidate fooled


def visible_devices() -> list[str]:
    """`cuda:N` for every GPU this process may use, or `["cpu"]` without one (no CUDA context is made)."""
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable torch.cuda: CPU
        n = 0
    return [f"cuda:{i}" for i in range(n)] or ["cpu"]


# What a worker takes of this process's environment; the rest it is given below.
_WORKER_ENV = ("PATH", "HOME", "LANG", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "TRITON_CACHE_DIR", "CUDA_HOME",
               "EVO_LOCK_DIR", "EVO_TASKS_HELD", "EVO_GPU_HOLD_LIMIT_S", "EVO_JUDGE_SHARE_TIMEOUT_S", TASKS_ENV)


class Worker:
    """A zygote process for one device, with futures for the jobs sent to it."""

    def __init__(self, device: str, session: Path, parallel: int, task_roots: list[Path] | None = None,
                 checking_slots: int = 4, tasks_held: int | None = None, judges: int | None = None):
        self.device = device
        env = {k: v for k, v in os.environ.items() if k in _WORKER_ENV}
        if tasks_held is not None:  # tasks whose data the worker keeps at once (evo/eval/reference_data.py)
            env["EVO_TASKS_HELD"] = str(max(1, tasks_held))
        if task_roots:  # where this machine keeps tasks the worker must find by name
            env[TASKS_ENV] = os.pathsep.join([*map(str, task_roots), *filter(None, [env.get(TASKS_ENV)])])
        env.update(PYTHONPATH=str(_REPO_ROOT), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
                   TORCH_NCCL_ENABLE_MONITORING="0", NCCL_NVLS_ENABLE="0")
        if device == "cpu":
            env["TRITON_INTERPRET"] = "1"
        env.setdefault("TRITON_CACHE_DIR", str(session / "triton-cache"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evo.eval.worker", "--device", device, "--session", str(session),
             "--parallel", str(parallel), "--checking-slots", str(checking_slots),
             *(["--judges", str(judges)] if judges is not None else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(session / f"worker-{device.replace(':', '-')}.log", "ab"),
            env=env, text=True, bufsize=1, start_new_session=True)
        self._futures: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.load = 0
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if not ready.startswith("{"):
            raise EvoError(f"the evaluation worker for {device} did not start (see {session}/worker-*.log)")
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._lock:
                fut = self._futures.pop(str(msg.get("id")), None)
                self.load -= 1
            if fut is not None:
                fut.set_result(msg)
        with self._lock:  # the worker died: fail whatever was waiting
            for fut in self._futures.values():
                fut.set_result({"status": "crashed", "error": "the evaluation worker exited"})
            self._futures.clear()

    def submit(self, job: dict[str, Any]) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        with self._lock:
            self._futures[str(job["id"])] = fut
            self.load += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return fut

    def close(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


REFERENCE_MEMORY_FACTOR = 4  # the reference job's memory limit, in the task's (a candidate's) limits


class KernelEvaluator:
    """Evaluates kernel candidates on every visible GPU; `workers` candidates in flight in all."""

    def __init__(self, task: Task, workers: int, scratch: Path, devices: list[str] | None = None,
                 config: BenchConfig | None = None, parallel_per_device: int | None = None,
                 session_seed: int | None = None, pool: WorkerPool | None = None):
        if task.config.family != "kernels":
            raise EvoError(f"task {task.name} is of the {task.config.family!r} family, not `kernels`: its candidates "
                           "do not run on the GPU harness")
        self.task = task
        self.workers = workers
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._own_pool = pool is None
        if pool is None:
            devices = devices or visible_devices()
            # `workers` in flight in all are that many children, spread over the GPUs (a worker held 4 whatever
            # --workers said, so a run never reached the harness's throughput); half of them checking at once.
            parallel = parallel_per_device or max(1, -(-workers // len(devices)))
            pool = WorkerPool(self.scratch, devices, parallel, [task.root.parent.parent],
                              checking_slots=max(4, parallel // 2))
        self.pool = pool
        self.session = Path(tempfile.mkdtemp(prefix="task-", dir=self.pool.session))
        self.config = config or BenchConfig()
        self.session_seed = session_seed if session_seed is not None else random.SystemRandom().randrange(2**31)
        self.devices = self.pool.devices
        self._workers = self.pool.workers
        self._prepared: dict[tuple[str, int], Future[dict[str, Any]]] = {}  # (device, session seed)
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def _job(self, **kw: Any) -> dict[str, Any]:
        """A job is a message: the task's name and the hash of its folder (the worker resolves the task on its
        own machine and refuses a folder that differs), seeds, limits and, for a candidate, its files' contents.
        No path of this machine: any worker, on any node, can run it."""
        cfg = self.task.config
        # The id names the answer among every job of the pool, which evaluators of other tasks share.
        return {"id": f"{self.session.name}.{next(self._ids)}", "task": self.task.name, "task_hash": task_hash(self.task),
                "timeout_s": cfg.timeout_s, "session_seed": self.session_seed, "memory_mb": cfg.memory_mb,
                "config": asdict(self.config), **kw}

    def _reference_job(self, worker: Worker, seed: int) -> Future[dict[str, Any]]:
        """The reference job of this task on this worker's device for the session `seed` (submitted once)."""
        with self._lock:
            fut = self._prepared.get((worker.device, seed))
            if fut is None:
                # Trusted, and it holds every timing set masked on the host for the calibration: GBs for a large
                # vocabulary (cross_entropy_fwd's reference passed 16 GB on the H100), so more than a candidate.
                fut = worker.submit(self._job(kind="reference", timeout_s=1800, session_seed=seed,
                                              memory_mb=REFERENCE_MEMORY_FACTOR * self.task.config.memory_mb))
                self._prepared[(worker.device, seed)] = fut
        return fut

    def _prepare(self, worker: Worker, session_seed: int | None = None,
                 reference: Future[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The reference job's answer (once per session: `session_seed`, this evaluator's own when None, draws the
        inputs and the expected outputs; `reference`: that job, already looked up)."""
        seed = self.session_seed if session_seed is None else session_seed
        answer = (reference or self._reference_job(worker, seed)).result()
        if answer.get("status") != "ok":
            raise EvoError(f"the reference of {self.task.name} failed on {worker.device}: {answer.get('error')}\n"
                           f"{answer.get('log_tail', '')}{answer.get('traceback', '')}")
        return answer

    def _pick(self) -> Worker:
        return min(self._workers, key=lambda w: w.load)

    def evaluate_files_sync(self, files: dict[str, str], fresh_inputs: bool = False, timed: bool = True
                            ) -> dict[str, Any]:
        """Run one candidate (its files: `candidate.py` and any helpers) and return the worker's answer plus scores.
        `fresh_inputs`: in a session of its own (new inputs and expected outputs, a reference job of its own)
        rather than this evaluator's. `timed=False`: the `correctness` rung (the visible workloads checked,
        nothing timed, a score of 0)."""
        worker = self._pick()
        seed = random.SystemRandom().randrange(2**31) if fresh_inputs else self.session_seed
        for again in (False, True):
            reference = self._reference_job(worker, seed)
            ref_answer = self._prepare(worker, seed, reference)
            prepared = ref_answer["prepared"]
            answer = worker.submit(self._job(kind="candidate", files=files, prepared=prepared,
                                             session_seed=seed, timed=timed)).result()
            if again or NO_REFERENCE_YET not in str(answer.get("error", "")):
                break
            with self._lock:  # the worker let this task's data go (other tasks came since): its reference again,
                # once for all the candidates that found it gone (the first drops the job they all used)
                if self._prepared.get((worker.device, seed)) is reference:
                    del self._prepared[(worker.device, seed)]
        if fresh_inputs:
            with self._lock:
                self._prepared.pop((worker.device, seed), None)  # one use: no later job asks for this seed
        report = self.score(answer, prepared, ref_answer.get("device_name", "cpu"))
        report["timed"] = timed
        return report

    def evaluate_path_sync(self, candidate_dir: Path) -> dict[str, Any]:
        """`evaluate_files_sync` of the `.py` files of a folder (holding `candidate.py`)."""
        return self.evaluate_files_sync({p.relative_to(candidate_dir).as_posix(): p.read_text()
                                         for p in sorted(Path(candidate_dir).rglob("*.py")) if p.is_file()})

    def evaluate_source_sync(self, source: str) -> dict[str, Any]:
        """`evaluate_files_sync` of one source text."""
        return self.evaluate_files_sync({MAIN_FILE: source})

    def score(self, answer: dict[str, Any], prepared: dict[str, Any], device_name: str) -> dict[str, Any]:
        """Per-workload T_SOL, baseline and SOL score from the worker's times (trusted arithmetic)."""
        ref = self.task.reference
        peaks = peaks_for(device_name)
        report: dict[str, Any] = {"status": answer.get("status"), "device": device_name, "peaks": peaks.name,
                                  "error": answer.get("error"), "workloads": [], "checks": [], "score": 0.0}
        result = answer.get("result")
        report["log_tail"] = answer.get("log_tail", "")  # what the candidate printed: shown, never believed
        if answer.get("status") != "ok" or result is None:
            report["error"] = answer.get("error") or "the worker gave no result"
            report["traceback"] = answer.get("traceback", "")
            return report
        checks = [tuple(c) for c in result.get("checks", [])]
        scores = []
        for w in workloads_for(ref.SPEC, "cpu" if device_name == "cpu" else "cuda"):
            params = dict(w.params)
            t_sol = speed_of_light_s(ref.flops(params), ref.min_bytes(params), ref.SPEC.dtype, peaks)
            base = prepared["workloads"][w.name]
            timing = result.get("workloads", {}).get(w.name)
            row = {"workload": w.name, "hidden": w.hidden, "t_sol_s": t_sol, "eager_s": base["eager"]["median_s"],
                   "compile_s": (base.get("compile") or {}).get("median_s"), "baseline_s": base["baseline_s"],
                   "time_s": None, "spread": None, "score": 0.0}
            if timing is not None:
                row.update(time_s=timing["median_s"], spread=timing["spread"], claimed_s=timing.get("claimed_s"),
                           clock_limited=timing.get("clock_limited", 0))
                if device_name != "cpu":
                    # Reported passed too: the publish level asks every dynamic check for a result. On the CPU
                    # the peaks are rough, so there is no result, and a kernel cannot be published from it.
                    possible = timing["median_s"] >= IMPOSSIBLE_FRACTION * t_sol
                    checks.append(("dynamic:possible_time", possible, "" if possible else
                                   f"workload {w.name}: {timing['median_s'] * 1e6:.2f} us is under 0.9 x the speed "
                                   f"of light ({t_sol * 1e6:.2f} us): the timing was fooled"))
                row["score"] = sol_score(timing["median_s"], base["baseline_s"], t_sol)
            scores.append(row["score"])
            report["workloads"].append(row)
        report["checks"] = checks
        report["seconds"] = result.get("seconds", {})
        report["bounds"] = result.get("bounds", {})  # what the judge's clock allowed, per workload
        report["judge_pid"] = result.get("judge_pid")  # which of the worker's judge processes judged it
        failures = [f"{n}: {r}" for n, p, r in checks if not p]
        report["error"] = failures[0] if failures else None
        report["passed"] = not failures
        report["score"] = sum(scores) / len(scores) if scores and not failures else 0.0
        return report

    async def evaluate(self, program: Program, fresh_inputs: bool = False, timed: bool = True) -> EvalResult:
        """Run one program on the harness: its scored report and the judge's checks, no verdict (the pipeline
        audits, `evo/eval/pipeline.py`). `timed=False`: the `correctness` rung (`evaluate_files_sync`)."""
        start = time.perf_counter()
        report = await asyncio.get_running_loop().run_in_executor(None, self.evaluate_files_sync,
                                                                  source_files(program.source), fresh_inputs, timed)
        result = report_to_result(report, time.perf_counter() - start)
        result.checks = [(str(n), bool(p), str(r or "")) for n, p, r in report.get("checks", [])]
        result.report = report
        return result

    async def run(self, job: Job) -> EvalResult:
        """The job at its rung (`KernelsFamily.fidelities`: its `timed` setting), once it is this evaluator's
        task with the folder hash the job was built against."""
        check_job_task(self.task, job)
        return await self.evaluate(job.program, timed=bool(job.settings.get("timed", True)))

    async def evaluate_on_fresh_inputs(self, program: Program) -> EvalResult:
        """`evaluate` in a session of the task's inputs of its own: inputs and expected outputs drawn anew (a
        reference job more), for the re-run of a held candidate (`evo/audit/reviewer.py`)."""
        return await self.evaluate(program, fresh_inputs=True)

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()
        shutil.rmtree(self.session, ignore_errors=True)


class WorkerPool:
    """One zygote worker per device, shareable by the evaluators of several tasks (`evo bench`)."""

    def __init__(self, scratch: Path, devices: list[str] | None = None, parallel_per_device: int = 4,
                 task_roots: list[Path] | None = None, checking_slots: int = 4, tasks_held: int | None = None,
                 judges: int | None = None):
        Path(scratch).mkdir(parents=True, exist_ok=True)
        self.session = Path(tempfile.mkdtemp(prefix="session-", dir=scratch))
        self.devices = devices or visible_devices()
        # checking_slots: children checking on one GPU at once (each holds its real shapes' memory meanwhile)
        # tasks_held: tasks whose inputs and expected outputs each worker keeps (a suite's, all of them)
        # judges: judge processes per worker (evo/eval/judge_process.py; one per 8 children when None)
        self.workers = [Worker(d, self.session, parallel_per_device, task_roots, checking_slots, tasks_held, judges)
                        for d in self.devices]

    def close(self) -> None:
        for w in self.workers:
            w.close()
        shutil.rmtree(self.session, ignore_errors=True)


def report_to_result(report: dict[str, Any], wall_s: float) -> EvalResult:
    """The engine's view of a scored report: ok with the SOL score, or a failure kind with the reason."""
    status = report.get("status")
    if status != "ok":
        kind = status if status in ("timeout", "memory", "crashed") else "error"
        return EvalResult(False, failure=kind, error=str(report.get("error"))[:2000], wall_s=wall_s)
    # An untimed rung's pass has no SOL score to report (its score is 0, the timing rung's job).
    metrics = {"sol_score": float(report["score"])} if report.get("timed", True) else {}
    for row in report["workloads"]:
        if row["time_s"] is not None:
            metrics[f"time_us/{row['workload']}"] = row["time_s"] * 1e6
    if not report.get("passed"):
        failed = next(n for n, p, _ in report["checks"] if not p)
        kind = "invalid" if failed in ("runs", "interface", *CORRECTNESS_CHECKS) else "audit"
        return EvalResult(False, metrics=metrics, failure=kind, error=str(report["error"])[:2000], wall_s=wall_s)
    return EvalResult(True, float(report["score"]), metrics, (), wall_s=wall_s)
