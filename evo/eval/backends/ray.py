"""Ray backend: the engine's jobs run on the actors of a Ray cluster; the engine stays one process on the
driver and the only writer of the store.

    evaluator = RayEvaluator(task, workers, scratch, address="auto")   # or ray://HOST:10001, $RAY_ADDRESS
    result = await evaluator.evaluate(program)                            # the evaluator protocol
    evaluator.close()

What runs where:
- one actor per GPU of the cluster (`num_gpus=1`) for the `kernels` family, each owning today's harness on
  its GPU (the zygote worker, its judge and GPU lock: `GpuEvalActor`); CPU families on CPU actors that
  declare the cores they use (`num_cpus`), each running the same sandbox as one machine (`CpuEvalActor`).
  Candidates never run in an actor: a candidate that reached Ray's control plane could have it run anything.
- the task's folder (and the shared modules of its family's folder) and evo's own code reach the nodes
  through the actors' `runtime_env`; no shared file system. Each actor hashes its copy: an actor whose copy
  differs from the engine's is drained, a job whose hash differs is refused, never run.
- answers come back as messages (raw outputs, or the harness's scored report with its checks); the driver's
  pipeline scores and audits them.
- the run's settings that one machine passes to its evaluators through the environment (`RUN_ENV`: the
  training budget of `--budget-s`) reach every actor through its `runtime_env`, on whatever node.

Backpressure: the engine keeps `workers` evaluations in flight; each waits here for a free slot of a live
actor (an actor has `slots`), so no more jobs than slots are ever sent and memory stays bounded by `workers`.

Faults: actors are created without Ray's restarts and retries (`max_restarts=0`, `max_task_retries=0`), so a
job runs where this module sends it and its answer is taken once. An actor (or its node) that dies with a
job in hand is replaced; the job is sent once more to another actor, and if that is lost too it comes back
as a failure of kind `infrastructure`, never blamed on the candidate. The engine records every answer
once (`Store.record_evaluation`), so the budget ends at exactly N. A GPU actor whose GPU fails its health
probe (`gpu_health.py`: at its start, or after a job failed as a sick GPU makes jobs fail) is drained: it
takes no more jobs, the jobs it held come back marked and go to another actor the same way (once), it stays
up, holding its GPU so that nothing else lands there, and `evo cluster status` shows it and why; another
actor is asked for in its place (it starts when a GPU is free, e.g. a node joins). A drained actor is probed
again after a back-off (`ray_drained.py`; `reprobe_s`, or $EVO_GPU_REPROBE_S as `FIRST,MAX`: 60 s doubling to 10 min by
default; `0` never): one whose probe passes goes back into the pool, and a replacement still waiting for a GPU
is called off in its place.

Rungs: `run(job)` (the pipeline's `JobRunner`) sends the job's rung and its settings with it, and the actor's
family backend runs the job at that rung where it takes jobs (the training harness's `short` rung); where it
runs whole evaluations only (the kernel harness) a rung other than the last is refused here, before sending.

Ray is imported only in `ray_connect.py` (`import_ray`), `ray_actor.py` and `ray_llm.py`; without it, an `EvoError`
names `pip install 'evo[cluster]'`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from evo.errors import EvoError
from evo.eval.backends.base import EvalResult
from evo.eval.backends.ray_connect import (
    NAMESPACE,
    RUN_ENV,
    connect,
    disconnect,
    first_line,
    import_ray,
    simulated_result,
    task_files,
)
from evo.eval.backends.ray_drained import REPROBE_ENV, REPROBE_S, DrainedGpus, reprobe_setting
from evo.eval.families import family_of
from evo.eval.families.base import Job, task_hash
from evo.program import Program, source_files
from evo.task import Task

log = logging.getLogger("evo.ray")
__all__ = ["INFRASTRUCTURE", "NAMESPACE", "REPROBE_ENV", "REPROBE_S", "RUN_ENV", "RayEvaluator", "connect",
           "disconnect", "import_ray", "reprobe_setting", "simulated_result", "task_files"]

INFRASTRUCTURE = "infrastructure"  # the failure kind of a job lost twice with its actor or node
ATTEMPTS = 2  # a job lost with its actor is sent once more, to another actor


@dataclass
class _Member:
    """An actor in the pool: its handle, its slots and the jobs it holds now."""

    name: str
    handle: Any
    slots: int
    load: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class RayEvaluator:
    """Evaluates programs on a Ray cluster's actors; `workers` evaluations in flight in all.

    `kind`: "gpu" (one `GpuEvalActor` per GPU, the default for `kernels` tasks), "cpu" (`CpuEvalActor`s, the
    default otherwise) or "simulated" (`SimulatedActor`: sleeps, for `benchmarks/scale.py`). `actors`: how
    many (default: every GPU for "gpu", enough for `workers` slots otherwise); `slots_per_actor`: jobs one
    actor runs at once (default 4 per GPU, 1 per CPU actor). `gpu_resource`: the resource an actor of kind
    "gpu" asks one of ("GPU"; a custom resource stands in for a GPU in the tests). `actor_options`: keyword
    arguments for the actors' constructor (the harness's `config`, the simulation's `seconds`, ...).
    `reprobe_s`: (first, max) seconds of the back-off before a drained GPU is probed again ("env":
    `reprobe_setting()`, from $EVO_GPU_REPROBE_S or 60 s doubling to 10 min); None never probes it again.
    """

    def __init__(self, task: Task, workers: int, scratch: Path, *, address: str | None = None,
                 kind: str | None = None, actors: int | None = None, slots_per_actor: int | None = None,
                 gpu_resource: str = "GPU", actor_options: dict[str, Any] | None = None,
                 ready_timeout_s: float = 300.0, reprobe_s: tuple[float, float] | None | Literal["env"] = "env"):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._started_ray = not import_ray().is_initialized()  # then `close` shuts down the Ray it starts
        self._ray = connect(address)
        from evo.eval.backends.ray_actor import KINDS, EvalActor

        self.task = task
        self.workers = workers
        self.kind = kind or ("gpu" if family_of(task).name == "kernels" else "cpu")
        if self.kind not in KINDS:
            raise EvoError(f"unknown Ray actor kind {self.kind!r}; valid values: {', '.join(KINDS)}")
        self._digest = task_hash(task)  # the engine's view of the folder, as in every job the pipeline builds
        self._last_rung = family_of(task).fidelities[-1].name
        self.runs_rungs = False  # whether the actors' backend takes jobs at any rung (set by the first actor up)
        self._backend_name = "backend"
        # The task's files go to each actor once, through the object store (a local folder is refused in an
        # actor's runtime_env; the job's is fixed when the driver connects, before any task is known).
        self._files = self._ray.put(task_files(task))
        self._token = uuid.uuid4().hex[:8]
        self._serial = 0
        self._actor_options = dict(actor_options or {})
        count, self.slots, resources = self._plan(actors, slots_per_actor, gpu_resource)
        self._remote = self._ray.remote(EvalActor)
        self.env = {k: os.environ[k] for k in RUN_ENV if os.environ.get(k)}
        self._options = dict(namespace=NAMESPACE, max_restarts=0, max_task_retries=0,
                             max_concurrency=self.slots + 2, **resources)
        if self.env:
            self._options["runtime_env"] = {"env_vars": self.env}  # merged with the job's (evo's code)
        self._members: list[_Member] = []
        self.drained: dict[str, str] = {}  # actor name -> why it takes no jobs (task folder differs, GPU sick)
        self.lost = 0  # actors lost with a job in hand
        self.requeued = 0  # jobs sent again after their actor was lost
        self.infrastructure_failures = 0
        self._spawning = 0
        self._cond: asyncio.Condition | None = None
        self._cond_loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._replacements: set[asyncio.Task[None]] = set()
        self._starting: dict[str, Any] = {}  # replacement actors not yet up (waiting for resources, maybe)
        # drained GPU actors, kept up (holding their GPUs), probed again after a back-off
        self.quarantine = DrainedGpus(self._ray, reprobe_setting() if reprobe_s == "env" else reprobe_s,
                                      self._touch, self._wake, self._restore)
        self._start(count, ready_timeout_s)

    @property
    def reprobes(self) -> int:
        """Probes of drained GPUs that came back (passed or not)."""
        return self.quarantine.reprobes

    @property
    def restored(self) -> int:
        """Drained actors back in service after a probe passed."""
        return self.quarantine.restored

    # -- building the pool ----------------------------------------------------------------
    def _plan(self, actors: int | None, slots: int | None, gpu_resource: str) -> tuple[int, int, dict[str, Any]]:
        """How many actors, with how many slots each, asking for which resources."""
        total = self._ray.cluster_resources()
        if self.kind == "gpu":
            from evo.eval.backends.ray_llm import replica_status

            # GPUs that evo's LLM replicas hold would leave actors waiting for ever: not counted
            held = sum(int(r.get("gpus") or 0) for r in replica_status(self._ray))
            gpus = int(total.get(gpu_resource, 0)) - held
            if gpus < 1:
                replicas = f", {held} held by LLM replicas (`evo cluster llm stop`)" if held else ""
                raise EvoError(f"the Ray cluster has no {gpu_resource} for evaluation actors (its resources: "
                               f"{sorted(total)}{replicas}): a kernels task needs one GPU per evaluation actor; "
                               "start the nodes with GPUs visible")
            resources: dict[str, Any] = {"num_cpus": 1}
            resources.update({"num_gpus": 1} if gpu_resource == "GPU" else {"resources": {gpu_resource: 1}})
            return actors or gpus, slots or 4, resources
        if self.kind == "simulated":
            slots = slots or min(self.workers, 250)
            return actors or math.ceil(self.workers / slots), slots, {"num_cpus": 0}
        slots = slots or 1
        want = actors or math.ceil(self.workers / slots)
        fits = max(1, int(total.get("CPU", 1)) // slots)
        if want > fits:
            log.warning("the Ray cluster has CPUs for %d CPU actors of %d slots, not %d: using %d", fits, slots,
                        want, fits)
        return min(want, fits), slots, {"num_cpus": slots, "scheduling_strategy": "SPREAD"}

    def _spawn(self) -> tuple[str, Any]:
        self._serial += 1
        name = f"evo-{self._token}-{self._serial}"
        options = self._remote.options(name=name, **self._options)
        handle = options.remote(name, self.task.name, self._files, self.slots, kind=self.kind,
                                **self._actor_options)
        return name, handle

    def _start(self, count: int, timeout_s: float) -> None:
        """Start `count` actors and take those that come up; one that dies starting (a node that died before the
        cluster noticed) or never gets its resources is left out, and only none at all is an error."""
        ray = self._ray
        spawned = [self._spawn() for _ in range(count)]
        refs = [h.ready.remote() for _, h in spawned]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        came = set(ready)
        failures: list[str] = []
        for (name, handle), ref in zip(spawned, refs, strict=True):
            if ref not in came:
                failures.append(f"{name} did not start within {timeout_s:.0f} s")
                self._kill_all([handle])
                continue
            try:
                self._admit(name, handle, ray.get(ref))
            except ray.exceptions.RayError as e:
                failures.append(f"{name}: {first_line(e)}")
        if failures:
            log.warning("%d of %d Ray actor(s) did not start: %s", len(failures), count, "; ".join(failures))
        if not self._members:
            why = next(iter(self.drained.values()), None) or (
                f"{'; '.join(failures)}: the cluster lacks the resources they ask for (see `ray status`)")
            raise EvoError(f"no Ray actor of kind {self.kind} can evaluate {self.task.name}: {why}")
        capacity = sum(m.slots for m in self._members)
        if self.workers < capacity:
            log.warning("%d evaluations in flight for %d slots on the Ray cluster: raise --workers to keep every "
                        "actor busy", self.workers, capacity)

    def _admit(self, name: str, handle: Any, info: dict[str, Any]) -> bool:
        """Take a started actor into the pool; drain it when its copy of the task differs (killed) or its GPU
        failed the health probe (kept, holding the GPU)."""
        if info.get("drained_reason"):
            why = f"actor {name} on node {info.get('node_ip')} was drained: {info['drained_reason']}"
            log.warning("%s", why)
            self.drained[name] = why
            self.quarantine.keep(name, handle)
            return False
        if info.get("task_hash") != self._digest:
            why = (f"task {self.task.name!r} differs on node {info.get('node_ip')} from the engine's (folder hash "
                   f"{info.get('task_hash')} there, {self._digest} here): its actor {name} was drained")
            log.warning("%s", why)
            self.drained[name] = why
            self._kill_all([handle])
            return False
        if not self._members:  # every actor of a pool runs the same family backend
            self.runs_rungs, self._backend_name = bool(info.get("runs_rungs")), str(info.get("backend"))
        self._members.append(_Member(name, handle, self.slots, info=info))
        self._touch()
        return True

    @property
    def capacity(self) -> int:
        """Slots of the live actors: evaluations the cluster runs at once."""
        return sum(m.slots for m in self._members)

    def actors(self) -> list[dict[str, Any]]:
        """Who and where each live actor is, with the jobs it holds now."""
        return [{**m.info, "name": m.name, "load": m.load} for m in self._members]

    # -- evaluating --------------------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._cond_loop is not loop:  # `evaluate_sync` callers bring a loop each call
            self._cond, self._cond_loop = asyncio.Condition(), loop
            self._changed = asyncio.Event()
        return self._cond

    def _touch(self) -> None:
        """The pool changed (a job went out or came back, an actor joined or was lost): wake `wait_until`."""
        if self._changed is not None:
            self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, checked whenever the pool changes (for monitors and tests)."""
        self._condition()
        self.quarantine.schedule()
        assert self._changed is not None
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    async def _acquire(self, avoid: set[str]) -> _Member | None:
        """A slot of a live actor (one not in `avoid` where one is free), waiting until one frees up. None when
        no actor is left and none is starting."""
        cond = self._condition()
        self.quarantine.schedule()  # those drained before a loop ran (at the start) get theirs here
        async with cond:
            while True:
                free = [m for m in self._members if m.load < m.slots]
                preferred = [m for m in free if m.name not in avoid] or free
                if preferred:
                    pick = min(preferred, key=lambda m: m.load / m.slots)
                    pick.load += 1
                    self._touch()
                    return pick
                if not self._members and not self._spawning and not self.quarantine.may_return:
                    return None
                await cond.wait()

    async def _release(self, member: _Member) -> None:
        cond = self._condition()
        async with cond:
            member.load -= 1
            cond.notify()
        self._touch()

    async def evaluate(self, program: Program, fresh_inputs: bool = False) -> EvalResult:
        """Run one program on an actor, the whole evaluation: its raw outputs or its scored report, no verdict
        (the pipeline audits)."""
        return await self._send({"program_id": program.id, "files": source_files(program.source),
                                 "task": self.task.name, "task_hash": self._digest, "fidelity": None,
                                 "fresh_inputs": fresh_inputs})

    async def evaluate_on_fresh_inputs(self, program: Program) -> EvalResult:
        """`evaluate`, on inputs the actor's backend has not used before where it can draw them (`FreshInputs`:
        the kernel harness, for the re-run of a held candidate); any other backend runs it as `evaluate`."""
        return await self.evaluate(program, fresh_inputs=True)

    async def run(self, job: Job) -> EvalResult:
        """The job at its rung on an actor (the rung and its settings travel in the message). A rung other than
        the last is refused here, before anything is sent, when the actors' backend runs whole evaluations only."""
        if job.task != self.task.name:
            raise EvoError(f"this Ray pool runs {self.task.name!r}, not {job.task!r}: build one pool per task")
        if job.task_hash != self._digest:
            raise EvoError(f"task {job.task!r} differs from the one sent to the Ray actors (folder hash "
                           f"{self._digest} there, {job.task_hash} in the job): its folder changed since")
        if job.fidelity != self._last_rung and not self.runs_rungs:
            raise EvoError(f"the Ray actors' {self._backend_name} runs only the whole evaluation "
                           f"({self._last_rung!r}), not the rung {job.fidelity!r}")
        return await self._send({"program_id": job.program_id, "files": dict(job.files), "task": job.task,
                                 "task_hash": job.task_hash, "fidelity": job.fidelity,
                                 "settings": dict(job.settings)})

    async def _send(self, job: dict[str, Any]) -> EvalResult:
        """Send a job to a free actor, once more to another if the first is lost; its answer, or a failure of
        kind `infrastructure`."""
        ray = self._ray
        start = time.perf_counter()
        tried: set[str] = set()
        losses: list[str] = []
        for attempt in range(ATTEMPTS):
            member = await self._acquire(tried)
            if member is None:
                losses.append("no actor is left in the pool")
                break
            tried.add(member.name)
            try:
                answer = await member.handle.evaluate.remote(job)
            except ray.exceptions.RayError as e:
                losses.append(f"{member.name}: {first_line(e)}")
                if isinstance(e, ray.exceptions.RayActorError):
                    self._lose(member, e)
                if attempt + 1 < ATTEMPTS:
                    self.requeued += 1
                continue
            finally:
                await self._release(member)
            if answer.get("unsupported"):  # the driver's check above missed it: an actor of another backend
                raise EvoError(str(answer["unsupported"]))
            if answer.pop("refused", False):
                losses.append(str(answer.get("error")))
                self._drain(member, str(answer.get("error")))
                continue
            if answer.get("drained"):  # its GPU failed the probe while this job ran there: not believed
                losses.append(str(answer.get("error")))
                self._drain_sick(member, str(answer["drained"]))
                if attempt + 1 < ATTEMPTS:
                    self.requeued += 1
                continue
            return _result(answer)
        self.infrastructure_failures += 1
        return EvalResult(False, failure=INFRASTRUCTURE, wall_s=time.perf_counter() - start,
                          error=f"the evaluation was lost on the cluster, not by the candidate ({len(losses)} "
                                f"tries): {'; '.join(losses)}"[:2000])

    def _remove(self, member: _Member) -> bool:
        if member in self._members:
            self._members.remove(member)
            return True
        return False

    def _lose(self, member: _Member, error: BaseException) -> None:
        """An actor died (or its node): out of the pool, and a new one started in its place."""
        if not self._remove(member):
            return  # another job of the same actor reported it first
        self.lost += 1
        self._touch()
        log.warning("Ray actor %s on %s was lost: %s; starting another", member.name, member.info.get("node_ip"),
                    first_line(error))
        self._ask_replacement()

    def _ask_replacement(self) -> None:
        self._spawning += 1  # now, not when the task first runs: a job waiting for a slot must see it coming
        task = asyncio.get_running_loop().create_task(self._replace())
        self._replacements.add(task)
        task.add_done_callback(self._replacements.discard)

    def _drain(self, member: _Member, why: str) -> None:
        if self._remove(member):
            self.drained[member.name] = why
            self._kill_all([member.handle])

    def _drain_sick(self, member: _Member, why: str) -> None:
        """A GPU failed its probe: its actor leaves the pool but stays up (its GPU taken, its state shown by
        `evo cluster status`); another actor is asked for in its place."""
        if not self._remove(member):
            return  # another job of the same actor reported it first
        self.drained[member.name] = f"actor {member.name} on node {member.info.get('node_ip')} was drained: {why}"
        self.quarantine.keep(member.name, member.handle)
        self._touch()
        log.warning("%s; asking for another GPU actor", self.drained[member.name])
        self._ask_replacement()

    def _restore(self, name: str, handle: Any, info: dict[str, Any]) -> None:
        """A drained actor passed its probe again: back in the pool, in place of a replacement still starting."""
        self.drained.pop(name, None)
        self._call_off_replacement()
        self._admit(name, handle, info)

    async def _wake(self) -> None:
        """The pool changed outside a job: jobs waiting for a slot look again."""
        self._touch()
        cond = self._condition()
        async with cond:
            cond.notify_all()

    def _call_off_replacement(self) -> None:
        """A drained actor came back: one replacement still starting (waiting for a GPU, maybe the one it holds)
        is not needed any more. One that came up already stays (the pool is one actor larger then)."""
        for task in self._replacements:
            if not task.done():
                task.cancel()
                return

    async def _replace(self) -> None:
        """Start an actor in place of a lost one; it joins the pool once its constructor ran (it may wait for
        a node with the resources it asks for: the run goes on with fewer slots meanwhile)."""
        ray = self._ray
        cond = self._condition()
        try:
            for delay in (0.0, 1.0, 5.0, 30.0):
                await asyncio.sleep(delay)
                name, handle = self._spawn()
                self._starting[name] = handle  # killed by `close` if it never comes up
                try:
                    info = await handle.ready.remote()
                except asyncio.CancelledError:  # called off (a drained actor came back) or closing
                    self._kill_all([handle])
                    raise
                except ray.exceptions.RayError as e:
                    log.warning("a replacement Ray actor failed to start: %s", first_line(e))
                    continue
                finally:
                    self._starting.pop(name, None)
                self._admit(name, handle, info)
                return
        finally:
            self._spawning -= 1
            async with cond:
                cond.notify_all()

    # -- closing --------------------------------------------------------------------------------
    def _kill_all(self, handles: Any) -> None:
        for handle in handles:
            try:
                self._ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def close(self) -> None:
        """Stop every actor (a GPU actor stops its worker first); shut Ray down if this evaluator started it."""
        for task in self._replacements:
            task.cancel()
        sick = self.quarantine.close()
        try:
            self._ray.get([m.handle.close.remote() for m in self._members], timeout=60)
        except Exception:  # noqa: BLE001 - dead actors stop their workers by dying
            pass
        self._kill_all([*(m.handle for m in self._members), *self._starting.values(), *sick])
        self._members.clear()
        self._starting.clear()
        if self._started_ray:
            self._ray.shutdown()


def _result(answer: dict[str, Any]) -> EvalResult:
    """An actor's answer as an `EvalResult` (JSON-shaped fields made back into tuples)."""
    result = EvalResult(bool(answer["ok"]), score=answer.get("score"), metrics=dict(answer.get("metrics") or {}),
                        descriptors=tuple(answer.get("descriptors") or ()), failure=answer.get("failure"),
                        error=answer.get("error"), wall_s=float(answer.get("wall_s") or 0.0),
                        checks=[(str(n), bool(p), str(r)) for n, p, r in answer.get("checks") or []],
                          outputs=answer.get("outputs"), report=answer.get("report"))
    if answer.get("output") is not None:  # what the candidate printed, where the local backend keeps it
        result.output = answer["output"]
    return result
