"""The Ray backend's actor: what runs on a node of the cluster (the driver's side is `ray.py`).

An actor gets the task's files from the driver (a message through the object store), writes them into a
`tasks/` folder of its node, points `EVO_TASKS_PATH` there and hashes its copy: a job whose engine-side hash
differs is refused, never run. It never runs candidate code itself: it hands each job to the task family's
own backend, built on this node as one machine builds it (the sandbox for `math`; the zygote worker and its
judge on the actor's GPU for `kernels`; the training harness for `training`). A GPU actor probes its GPU
(`gpu_health.py`) before it takes jobs and after a job failed as a sick GPU makes jobs fail, and drains
itself when the probe fails; the driver asks a drained actor to probe again after a back-off (`reprobe`),
and one whose probe passes takes jobs again. A job's rung (`fidelity`, with its settings) reaches the family's
backend as a `Job` where that backend takes jobs (`JobRunner`). Answers are plain dicts: the candidate's raw
outputs or the harness's report, for the driver to score and audit.

Only this module, `ray.py` and `ray_llm.py` import Ray.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray

from evo.eval.backends.base import EvalResult, Evaluator, FreshInputs, JobRunner
from evo.eval.backends.gpu_health import PROBE_TIMEOUT_S, Health, probe, suspicious
from evo.eval.backends.ray_connect import RUN_ENV, simulated_result
from evo.eval.families.base import Job, task_hash
from evo.program import MAIN_FILE, Program
from evo.task import TASKS_ENV, Task, load_task

RATE_WINDOW_S = 60.0  # evaluations per minute are counted over this window
log = logging.getLogger("evo.ray")


def _answer(result: EvalResult, **extra: Any) -> dict[str, Any]:
    """An `EvalResult` as the message an actor sends back (no verdict: the driver audits)."""
    return {"ok": result.ok, "score": result.score, "metrics": result.metrics, "descriptors": result.descriptors,
            "failure": result.failure, "error": result.error, "wall_s": result.wall_s, "checks": result.checks,
            "outputs": result.outputs, "report": result.report, "output": getattr(result, "output", None), **extra}


class _Counters:
    """Jobs in flight and finished, and the last failure, for `evo cluster status` (read while jobs run)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.in_flight = 0
        self.done = 0
        self.last_error: str | None = None
        self._finished: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._born = time.monotonic()

    def start(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finish(self, result: EvalResult | None, counted: bool = True) -> None:
        """A job ended: `counted` when its answer goes back as this actor's (not drained, not raised)."""
        now = time.monotonic()
        with self._lock:
            self.in_flight -= 1
            if result is not None and not result.ok:
                self.last_error = f"{result.failure}: {(result.error or '').strip()[:300]}"
            if counted and result is not None:
                self.done += 1
                self._finished.append(now)
            while self._finished and self._finished[0] < now - RATE_WINDOW_S:
                self._finished.popleft()

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            recent = sum(1 for t in self._finished if t >= now - RATE_WINDOW_S)
            # An actor younger than the window counts over its life (at least 10 s): 47 done in its first 20 s
            # are 141 a minute, not 47.
            window = min(RATE_WINDOW_S, max(10.0, now - self._born))
            return {"slots": self.slots, "in_flight": self.in_flight, "done": self.done,
                    "per_minute": recent * 60.0 / window, "last_error": self.last_error}


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
        from evo.eval.families import family_of

        self.last_rung = family_of(self.task).fidelities[-1].name

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


class EvalActor:
    """One evaluation actor: this node's copy of the task and the family's own backend on it, `slots` jobs at
    once (an async actor). `kind`:

    - "cpu": the sandbox of one machine (`math`: `LocalEvaluator`), on the cores Ray gave it;
    - "gpu": the GPU Ray gave it (Ray sets CUDA_VISIBLE_DEVICES) and today's harness there (`kernels`: the
      zygote worker, its judge and GPU lock). Its GPU is probed (`gpu_health.probe`) before the harness
      starts and again after a job failed as a sick GPU makes jobs fail; a probe that fails drains the actor:
      from then on every answer says so (`drained`) and the driver sends the job elsewhere. Without CUDA (a
      custom resource standing in for a GPU, in the tests) the harness runs Triton's interpreter on the CPU;
    - "simulated": no candidate runs, each job sleeps `seconds` (`benchmarks/scale.py`).

    `env` are the run's settings the driver forwards (`RUN_ENV`), already in this process's environment
    through the actor's `runtime_env`: reported by `ready`, for the driver to check they arrived.
    """

    def __init__(self, name: str, task_name: str, files: dict[str, bytes], slots: int, *, kind: str = "cpu",
                 probe_timeout_s: float = PROBE_TIMEOUT_S, seconds: float = 1.0,
                 descriptor_ranges: list[tuple[float, float]] | None = None, **backend_options: Any) -> None:
        self.name = name
        self.kind = kind
        self.node_task = _NodeTask(task_name, files)
        self.counters = _Counters(slots)
        self.probe_timeout_s = probe_timeout_s
        self.device = "cpu"
        self.health: Health | None = None  # the last probe's (GPU actors only)
        self.drained: str | None = None  # why this actor takes no more jobs
        self._last_drain = ""
        self._drains = 0  # times it was drained: a job that saw one begin while it ran is not believed
        self._slots, self._options = slots, backend_options  # for a backend built once a re-probe passes
        self._probe_started = -math.inf
        self._probe_lock = asyncio.Lock()
        self.backend: Evaluator | None = None
        if kind == "simulated":
            self.backend = _Sleeper(seconds, descriptor_ranges or [])
            return
        if kind == "gpu":
            from evo.eval.backends.kernel import visible_devices

            self.device = visible_devices()[0]
            self._probe_started = time.monotonic()
            self.health = probe(self.device, probe_timeout_s)  # before the harness: a sick GPU starts nothing
            if not self.health.ok:
                self._drain(self.health.reason)
                return
        self.backend = self._backend(slots, backend_options)

    def _backend(self, slots: int, options: dict[str, Any]) -> Evaluator:
        """The task family's backend on this node, as one machine builds it."""
        from evo.eval.families import family_of

        task = self.node_task.task
        family = family_of(task)
        if family.name == "kernels":  # one worker, on the GPU Ray gave this actor, `slots` candidates at once
            options = {"devices": [self.device], "parallel_per_device": slots, **options}
        scratch = Path(tempfile.mkdtemp(prefix=f"evo-ray-{self.kind}-"))
        os.chmod(scratch, 0o755)  # the sandbox's dropped uid enters its work folders here
        return family.backend(task, slots, scratch, **options)

    async def ready(self) -> dict[str, Any]:
        """Who and where this actor is, its task hash (the driver drains one whose hash differs), its health,
        its backend (whether it takes jobs at any rung) and the run's settings it got."""
        return {**_identity(self.name, self.counters, self.node_task.digest), "kind": self.kind,
                "backend": type(self.backend).__name__, "runs_rungs": isinstance(self.backend, JobRunner),
                "device": self.device, "env": {k: os.environ.get(k) for k in RUN_ENV},
                "health": "drained" if self.drained else "healthy" if self.health else "-",
                "drained_reason": self.drained, "probe": self.health.to_dict() if self.health else None}

    async def stats(self) -> dict[str, Any]:
        """`ready`, now: for `evo cluster status`."""
        return await self.ready()

    async def evaluate(self, job: dict[str, Any]) -> dict[str, Any]:
        """One job through the family's backend: raw outputs, or the harness's scored report with its checks."""
        refused = self.node_task.refusal(job["task_hash"])
        if refused is not None:
            return refused
        if self.drained or self.backend is None:
            return self._drained_answer()
        fidelity = job.get("fidelity")
        runner = self.backend if isinstance(self.backend, JobRunner) else None
        last = self.node_task.last_rung
        if runner is None and fidelity not in (None, last):
            return {"unsupported": f"the Ray actors' {type(self.backend).__name__} runs only the whole evaluation "
                                   f"({last!r}), not the rung {fidelity!r}"}
        self.counters.start()
        started, drains = time.monotonic(), self._drains
        result: EvalResult | None = None
        try:
            try:
                program = Program(source=_source(job["files"]), id=job["program_id"])
                if runner is not None and fidelity is not None:
                    result = await runner.run(Job(job["program_id"], dict(job["files"]), self.node_task.task.name,
                                                  job["task_hash"], fidelity, dict(job.get("settings") or {})))
                elif job.get("fresh_inputs") and isinstance(self.backend, FreshInputs):
                    result = await self.backend.evaluate_on_fresh_inputs(program)
                else:
                    result = await self.backend.evaluate(program)
            except Exception as e:  # the harness itself broke (a reference that died on the GPU, ...)
                self.counters.last_error = f"{type(e).__name__}: {e}"[:300]
                if self.kind == "gpu":
                    await self._recheck(started)
                if not self.drained:
                    raise
            else:
                if self.kind == "gpu" and not result.ok and suspicious(result.failure, result.error):
                    await self._recheck(started)
            if self.drained or self._drains != drains:  # the GPU was found sick while this job ran: not believed
                return self._drained_answer()
            assert result is not None
            return _answer(result, node_ip=_node_ip(), actor=self.name)
        finally:
            self.counters.finish(result, counted=not self.drained and self._drains == drains)

    async def _recheck(self, since: float) -> None:
        """Probe the GPU again, unless a probe started after `since` (a failure of several jobs at once is
        one probe); a failed probe drains this actor."""
        async with self._probe_lock:
            if self._probe_started < since:
                self._probe_started = time.monotonic()
                self.health = await asyncio.to_thread(probe, self.device, self.probe_timeout_s)
            if not self.health or self.health.ok or self.drained:
                return
            self._drain(self.health.reason)
            log.warning("Ray actor %s drained: %s", self.name, self.drained)

    def _drain(self, why: str) -> None:
        self.drained = self._last_drain = why
        self._drains += 1

    async def reprobe(self) -> dict[str, Any]:
        """Probe the GPU again (the driver asks a drained actor after a back-off): a probe that passes returns
        the actor to service (its harness started if the GPU was sick from the start); `ready`'s answer."""
        async with self._probe_lock:
            self._probe_started = time.monotonic()
            self.health = await asyncio.to_thread(probe, self.device, self.probe_timeout_s)
            if not self.health.ok:
                self._drain(self.health.reason)
            elif self.drained:
                if self.backend is None:
                    self.backend = await asyncio.to_thread(self._backend, self._slots, self._options)
                log.warning("Ray actor %s passed its GPU probe again: back in service", self.name)
                self.drained = None
        return await self.ready()

    def _drained_answer(self) -> dict[str, Any]:
        why = self.drained or self._last_drain
        error = f"the GPU of actor {self.name} on node {_node_ip()} is drained: {why}"
        return _answer(EvalResult(False, failure="infrastructure", error=error), drained=why)

    def close(self) -> None:
        """Stop the backend (a GPU actor's worker and its judge; an actor that dies closes the worker's stdin,
        which stops it too)."""
        if self.backend is not None:
            self.backend.close()


class _Sleeper:
    """The simulated backend: each evaluation a sleep of `seconds`, its answer a made-up score and descriptors
    from the source's hash."""

    def __init__(self, seconds: float, ranges: list[tuple[float, float]]) -> None:
        self.workers = 1
        self.seconds = seconds
        self.ranges = ranges

    async def evaluate(self, program: Program) -> EvalResult:
        await asyncio.sleep(self.seconds)
        return simulated_result(program.source, self.seconds, self.ranges)

    def close(self) -> None:
        pass


def _source(files: dict[str, str]) -> str | dict[str, str]:
    return files[MAIN_FILE] if set(files) == {MAIN_FILE} else dict(files)


KINDS = ("cpu", "gpu", "simulated")
