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
actor is asked for in its place (it starts when a GPU is free, e.g. a node joins).

Ray is imported only here, in `ray_actor.py` and in `ray_llm.py`; without it, an `EvoError` names `pip install 'evo[cluster]'`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from evo.errors import EvoError
from evo.eval.backends.base import EvalResult
from evo.eval.families import family_of
from evo.eval.families.base import task_hash
from evo.program import Program, source_files
from evo.task import Task

log = logging.getLogger("evo.ray")

NAMESPACE = "evo"  # the namespace of evo's named actors: `evo cluster status` finds them there
INFRASTRUCTURE = "infrastructure"  # the failure kind of a job lost twice with its actor or node
# The run's settings one machine hands its evaluators through the environment (evo/cli/run.py sets them):
# forwarded to every actor, on every node. Node-local ones (EVO_DATA, EVO_TRAIN_DEVICE, paths) are not.
RUN_ENV = ("EVO_TRAIN_BUDGET_S",)
ATTEMPTS = 2  # a job lost with its actor is sent once more, to another actor
_EVO_PACKAGE = Path(__file__).resolve().parents[2]


def import_ray() -> ModuleType:
    """The `ray` module, or an `EvoError` that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise EvoError("the Ray backend needs Ray, which is not installed: pip install 'evo[cluster]'") from e
    return ray


def connect(address: str | None = None, ship_code: bool = True) -> ModuleType:
    """Connect this process to a Ray cluster (`address`, else $RAY_ADDRESS, else a Ray started here), once.
    `ship_code`: evo's own code travels to every node with this driver's job (nodes need only Ray and evo's
    dependencies); a driver that runs no actors (`evo cluster status`) sends nothing."""
    ray = import_ray()
    if not ray.is_initialized():
        env = {"py_modules": [str(_EVO_PACKAGE)], "excludes": ["__pycache__", "*.pyc"]} if ship_code else None
        try:
            # log_to_driver=False: the actors' output stays in the nodes' Ray logs instead of breaking the
            # engine's live display; what a job printed comes back in its answer.
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env=env)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or "$RAY_ADDRESS"
            raise EvoError(f"cannot connect to the Ray cluster at {where}: {e}. Start one with `ray start --head` "
                           "(and `ray start --address HEAD:6379` on each other node), then pass --ray-address "
                           "auto or ray://HEAD:10001") from e
    return ray


def task_files(task: Task) -> dict[str, bytes]:
    """What every node gets of the task, by path under a `tasks/` folder: the task's folder and the loose files
    of its family's folder (shared modules such as `tasks/math/circle_packing.py` that a reference imports)."""
    files: dict[str, bytes] = {}
    root = Path(task.root)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(p == "__pycache__" or p.startswith(".") for p in rel.parts):
            files[f"{task.name}/{rel.as_posix()}"] = path.read_bytes()
    family = task.name.rsplit("/", 1)[0] if "/" in task.name else ""
    for shared in sorted(root.parent.iterdir()):
        if shared.is_file() and shared.suffix == ".py":
            files[f"{family}/{shared.name}".lstrip("/")] = shared.read_bytes()
    return files


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
    """

    def __init__(self, task: Task, workers: int, scratch: Path, *, address: str | None = None,
                 kind: str | None = None, actors: int | None = None, slots_per_actor: int | None = None,
                 gpu_resource: str = "GPU", actor_options: dict[str, Any] | None = None,
                 ready_timeout_s: float = 300.0):
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
        self._sick: list[Any] = []  # drained GPU actors, kept up (holding their GPUs) until `close`
        self.lost = 0  # actors lost with a job in hand
        self.requeued = 0  # jobs sent again after their actor was lost
        self.infrastructure_failures = 0
        self._spawning = 0
        self._cond: asyncio.Condition | None = None
        self._cond_loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._replacements: set[asyncio.Task[None]] = set()
        self._starting: dict[str, Any] = {}  # replacement actors not yet up (waiting for resources, maybe)
        self._start(count, ready_timeout_s)

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
                failures.append(f"{name}: {_first_line(e)}")
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
            self._sick.append(handle)
            return False
        if info.get("task_hash") != self._digest:
            why = (f"task {self.task.name!r} differs on node {info.get('node_ip')} from the engine's (folder hash "
                   f"{info.get('task_hash')} there, {self._digest} here): its actor {name} was drained")
            log.warning("%s", why)
            self.drained[name] = why
            self._kill_all([handle])
            return False
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
        assert self._changed is not None
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    async def _acquire(self, avoid: set[str]) -> _Member | None:
        """A slot of a live actor (one not in `avoid` where one is free), waiting until one frees up. None when
        no actor is left and none is starting."""
        cond = self._condition()
        async with cond:
            while True:
                free = [m for m in self._members if m.load < m.slots]
                preferred = [m for m in free if m.name not in avoid] or free
                if preferred:
                    pick = min(preferred, key=lambda m: m.load / m.slots)
                    pick.load += 1
                    self._touch()
                    return pick
                if not self._members and not self._spawning:
                    return None
                await cond.wait()

    async def _release(self, member: _Member) -> None:
        cond = self._condition()
        async with cond:
            member.load -= 1
            cond.notify()
        self._touch()

    async def evaluate(self, program: Program) -> EvalResult:
        """Run one program on an actor: its raw outputs or its scored report, no verdict (the pipeline audits)."""
        ray = self._ray
        job = {"program_id": program.id, "files": source_files(program.source), "task": self.task.name,
               "task_hash": self._digest}
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
                losses.append(f"{member.name}: {_first_line(e)}")
                if isinstance(e, ray.exceptions.RayActorError):
                    self._lose(member, e)
                if attempt + 1 < ATTEMPTS:
                    self.requeued += 1
                continue
            finally:
                await self._release(member)
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
                    _first_line(error))
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
        self._sick.append(member.handle)
        self._touch()
        log.warning("%s; asking for another GPU actor", self.drained[member.name])
        self._ask_replacement()

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
                except ray.exceptions.RayError as e:
                    log.warning("a replacement Ray actor failed to start: %s", _first_line(e))
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
        for task in list(self._replacements):
            task.cancel()
        try:
            self._ray.get([m.handle.close.remote() for m in self._members], timeout=60)
        except Exception:  # noqa: BLE001 - dead actors stop their workers by dying
            pass
        self._kill_all([*(m.handle for m in self._members), *self._starting.values(), *self._sick])
        self._members.clear()
        self._starting.clear()
        self._sick.clear()
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


def simulated_result(source: object, seconds: float, ranges: list[tuple[float, float]]) -> EvalResult:
    """A made-up result for a source, the same on every call: a score in [0, 1) and descriptors inside
    `ranges` (the simulated evaluators of `benchmarks/scale.py`)."""
    digest = hashlib.sha256(repr(source).encode()).digest()
    fractions = [b / 256 for b in digest]
    descriptors = tuple(lo + (hi - lo) * fractions[1 + i] for i, (lo, hi) in enumerate(ranges))
    return EvalResult(True, score=fractions[0], descriptors=descriptors, wall_s=seconds)


def disconnect() -> None:
    """Leave the Ray cluster this process connected to (`connect`); a Ray started here stops."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]
