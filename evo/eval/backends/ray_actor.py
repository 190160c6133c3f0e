"""The Ray backend's actors: what runs on a node of the cluster (the driver's side is `ray.py`).

An actor gets the task's files from the driver (a message through the object store), writes them into a
`tasks/` folder of its node, points `EVO_TASKS_PATH` there and hashes its copy: a job whose engine-side hash
differs is refused, never run. It never runs candidate code itself: a CPU actor hands each
job to the same sandbox as one machine does (`evaluate_in_sandbox`: namespaces, no network, Landlock), a GPU
actor to the zygote worker and its judge (`KernelEvaluator` on the GPU Ray gave it). Answers are plain
dicts: the candidate's raw outputs or the harness's report, for the driver to score and audit.

Only this module and `ray.py` import Ray.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray

from evo.eval.backends.base import EvalResult
from evo.eval.backends.ray import simulated_result
from evo.eval.families.base import task_hash
from evo.program import MAIN_FILE, Program
from evo.task import TASKS_ENV, Task, load_task

RATE_WINDOW_S = 60.0  # evaluations per minute are counted over this window


def _answer(result: EvalResult, **extra: Any) -> dict[str, Any]:
    """An `EvalResult` as the message an actor sends back (no verdict: the driver audits)."""
    return {"ok": result.ok, "score": result.score, "metrics": result.metrics, "descriptors": result.descriptors,
            "failure": result.failure, "error": result.error, "wall_s": result.wall_s, "checks": result.checks,
            "outputs": result.outputs, "report": result.report, "output": getattr(result, "output", None), **extra}


class _Counters:
    """Jobs in flight and finished, for `evo cluster status` (read while jobs run: thread-safe)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.in_flight = 0
        self.done = 0
        self._finished: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finish(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.in_flight -= 1
            self.done += 1
            self._finished.append(now)
            while self._finished and self._finished[0] < now - RATE_WINDOW_S:
                self._finished.popleft()

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            recent = sum(1 for t in self._finished if t >= now - RATE_WINDOW_S)
            return {"slots": self.slots, "in_flight": self.in_flight, "done": self.done,
                    "per_minute": recent * 60.0 / RATE_WINDOW_S}


class _NodeTask:
    """This node's copy of the task: the files the driver sent, written under a `tasks/` folder of this node,
    found by name from there (`EVO_TASKS_PATH`) and hashed here."""

    def __init__(self, task_name: str, files: dict[str, bytes]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="evo-ray-task-"))
        os.chmod(self.folder, 0o755)  # the sandbox's dropped uid reads the reference from here
        here = self.folder / "tasks"
        for rel, data in files.items():
            path = (here / rel).resolve()
            if not path.is_relative_to(here.resolve()):
                raise ValueError(f"task file {rel!r} leaves the tasks folder")
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            path.write_bytes(data)
            path.chmod(0o644)
        os.environ[TASKS_ENV] = os.pathsep.join(filter(None, [str(here), os.environ.get(TASKS_ENV)]))
        self.task: Task = load_task(task_name)
        self.digest = task_hash(self.task, fresh=True)

    def refusal(self, wanted: str) -> dict[str, Any] | None:
        """The answer that refuses a job whose task hash is not this node's, or None."""
        if wanted == self.digest:
            return None
        error = (f"task {self.task.name!r} differs on node {_node_ip()} from the engine's (folder hash "
                 f"{self.digest} here, {wanted} there): the job was refused")
        return _answer(EvalResult(False, failure="infrastructure", error=error), refused=True)


def _node_ip() -> str:
    try:
        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only for messages
        return socket.gethostname()


def _identity(name: str, counters: _Counters, digest: str) -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"name": name, "node_id": ctx.get_node_id(), "node_ip": _node_ip(), "pid": os.getpid(),
            "task_hash": digest, "gpu_ids": [str(g) for g in ray.get_gpu_ids()], **counters.snapshot()}


class CpuEvalActor:
    """Runs CPU-family jobs (`math`) in the local sandbox of this node, `slots` at once (a threaded actor)."""

    def __init__(self, name: str, task_name: str, files: dict[str, bytes], slots: int) -> None:
        self.name = name
        self.node_task = _NodeTask(task_name, files)
        self.counters = _Counters(slots)
        self.scratch = Path(tempfile.mkdtemp(prefix="evo-ray-cpu-"))
        os.chmod(self.scratch, 0o755)  # the sandbox's dropped uid enters its work folders here

    def ready(self) -> dict[str, Any]:
        """Who and where this actor is, with its task hash (the driver drains one whose hash differs)."""
        return _identity(self.name, self.counters, self.node_task.digest)

    def stats(self) -> dict[str, Any]:
        return self.ready()

    def evaluate(self, job: dict[str, Any]) -> dict[str, Any]:
        """One job: its files written into a fresh folder and run in the sandbox; raw outputs back."""
        from evo.eval.backends.local import evaluate_in_sandbox

        refused = self.node_task.refusal(job["task_hash"])
        if refused is not None:
            return refused
        self.counters.start()
        try:
            program = Program(source=_source(job["files"]), id=job["program_id"])
            result = evaluate_in_sandbox(self.node_task.task, program, self.scratch, score=False)
            return _answer(result, node_ip=_node_ip(), actor=self.name)
        finally:
            self.counters.finish()


class GpuEvalActor:
    """Owns one GPU (Ray sets CUDA_VISIBLE_DEVICES) and today's harness on it: the zygote worker with its
    judge and GPU lock (`KernelEvaluator`), `slots` candidates at once. Without CUDA (a custom resource
    standing in for a GPU, in the tests) the worker runs Triton's interpreter on the CPU."""

    def __init__(self, name: str, task_name: str, files: dict[str, bytes], slots: int,
                 **harness: Any) -> None:
        from evo.eval.backends.kernel import KernelEvaluator, visible_devices

        self.name = name
        self.node_task = _NodeTask(task_name, files)
        self.counters = _Counters(slots)
        devices = visible_devices()[:1]
        scratch = Path(tempfile.mkdtemp(prefix="evo-ray-gpu-"))
        self.harness = KernelEvaluator(self.node_task.task, slots, scratch, devices=devices,
                                       parallel_per_device=slots, **harness)

    def ready(self) -> dict[str, Any]:
        return {**_identity(self.name, self.counters, self.node_task.digest), "device": self.harness.devices[0]}

    def stats(self) -> dict[str, Any]:
        return self.ready()

    def evaluate(self, job: dict[str, Any]) -> dict[str, Any]:
        """One kernel job through the harness, scored here from the judge's times (trusted arithmetic)."""
        from evo.eval.backends.kernel import report_to_result

        refused = self.node_task.refusal(job["task_hash"])
        if refused is not None:
            return refused
        self.counters.start()
        start = time.perf_counter()
        try:
            report = self.harness.evaluate_files_sync(job["files"])
            result = report_to_result(report, time.perf_counter() - start)
            result.checks = [(str(n), bool(p), str(r or "")) for n, p, r in report.get("checks", [])]
            result.report = report
            return _answer(result, node_ip=_node_ip(), actor=self.name)
        finally:
            self.counters.finish()

    def close(self) -> None:
        """Stop the worker and its judge (an actor that dies closes the worker's stdin, which stops it too)."""
        self.harness.close()


class SimulatedActor:
    """An evaluator that only waits (`benchmarks/scale.py`): an async actor with many slots, each evaluation a
    sleep of `seconds`; the answer is a made-up score and descriptors from the source's hash."""

    def __init__(self, name: str, task_name: str, files: dict[str, bytes], slots: int, seconds: float = 1.0,
                 descriptor_ranges: list[tuple[float, float]] | None = None) -> None:
        self.name = name
        self.node_task = _NodeTask(task_name, files)
        self.counters = _Counters(slots)
        self.seconds = seconds
        self.ranges = descriptor_ranges or []

    async def ready(self) -> dict[str, Any]:
        return _identity(self.name, self.counters, self.node_task.digest)

    async def stats(self) -> dict[str, Any]:
        return await self.ready()

    async def evaluate(self, job: dict[str, Any]) -> dict[str, Any]:
        refused = self.node_task.refusal(job["task_hash"])
        if refused is not None:
            return refused
        self.counters.start()
        try:
            await asyncio.sleep(self.seconds)
            return _answer(simulated_result(_source(job["files"]), self.seconds, self.ranges), actor=self.name)
        finally:
            self.counters.finish()


def _source(files: dict[str, str]) -> str | dict[str, str]:
    return files[MAIN_FILE] if set(files) == {MAIN_FILE} else dict(files)


ACTORS = {"cpu": CpuEvalActor, "gpu": GpuEvalActor, "simulated": SimulatedActor}
