"""A suite's run directory: creating one (`evo run --suite`) and opening one to continue it (`evo resume`).

    RUN_DIR/evo.db                the suite's store: its meta row `suite` (tasks, options, related tasks) and
                                  the suite's events (created, started, stopped with the allocation)
    RUN_DIR/tasks/<task>/evo.db   one store per task: its population's programs, evaluations, admissions and
                                  transfer records, a run of its own in every other respect (`evo show`,
                                  `evo report`, `evo export` read it as any run)

The suite's directory is locked while a process runs it, and so is each task's. The budget is the suite's:
every task's store carries the suite's total as its budget, and the suite spends it across them. A task's
directory records the suite it belongs to (meta `suite_member`), so that `evo resume` on it alone is
refused: the suite resumes as one.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError
from evo.eval.backends.base import Evaluator
from evo.run_dir import RESUMABLE, RunLock, _check_writable, _make_dir
from evo.store import DB_NAME, Store
from evo.suite.layout import MEMBER_KEY, MEMBERS, SUITE_KEY, member_dir, suite_meta
from evo.suite.tasks import Relation, load_suite_tasks, related_tasks, resolve_suite
from evo.task import Task

if TYPE_CHECKING:
    from evo.eval.backends.kernel import WorkerPool

# A model the suite's tasks share must be a server: an in-process model or a managed `vllm serve` would be
# started once per task.
_SERVER_ONLY = ("vllm:", "transformers:", "vllm-offline:")


@dataclass
class SuiteOptions:
    """Options of a suite beside the run options (stored with the suite; see evo/suite/bandit.py)."""

    floor: float = 0.25  # each of K tasks gets at least floor / K of the proposals
    window: int = 16  # evaluations a task's recent improvement is measured over
    transfer: bool = True  # offer related tasks' elites to the operators (prompts, transplant)
    transfer_rate: float = 0.5  # share of LLM calls shown one or two elites of related tasks
    related_k: int = 3  # nearest tasks by seed embedding that count as related, beside the category's
    transplant_weight: float = 0.25  # the transplant operator's weight, unless the operators name it

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor <= 1.0:
            raise EvoError(f"--suite-floor must be a fraction in [0, 1], got {self.floor} (e.g. 0.25)")
        if not 0.0 <= self.transfer_rate <= 1.0:
            raise EvoError(f"transfer_rate must be a probability in [0, 1], got {self.transfer_rate}")
        if self.window < 1 or self.related_k < 0 or self.transplant_weight < 0:
            raise EvoError("window must be >= 1, related_k and transplant_weight >= 0")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SuiteOptions:
        """Options as stored (unknown keys of a later evo are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class SuiteParts:
    """What a `Suite` is built from: its store and lock, the tasks' engines, options and relations."""

    run_dir: Path
    store: Store
    lock: RunLock
    config: RunConfig  # the suite's own options: budget (the total), workers (at once, in all), seed
    options: SuiteOptions
    members: dict[str, Engine]
    related: dict[str, list[Relation]]
    pool: WorkerPool | None = None  # the kernel tasks' shared worker pool (evo/eval/backends/kernel.py), if any

    def release(self) -> None:
        """Close every task's engine, the kernel tasks' worker pool and the suite's store; drop the locks."""
        for engine in self.members.values():
            engine.close()
        if self.pool is not None:
            self.pool.close()
        self.store.close()
        self.lock.release()


def _kernel_pipelines(run_dir: Path, tasks: list[Task], config: RunConfig
                      ) -> tuple[WorkerPool | None, dict[str, Evaluator]]:
    """One worker pool for the suite's kernel tasks, and each one's pipeline on it: one zygote and one judge per
    GPU for the whole suite rather than per task (each imports torch and Triton; a judge holds a CUDA context),
    every task's data kept (`tasks_held`). None and no pipeline where tasks build their own backends: fewer than
    two kernel tasks, or a Ray cluster's."""
    kernel = [t for t in tasks if t.config.family == "kernels"]
    if len(kernel) < 2 or config.backend != "local":
        return None, {}
    from evo.eval.backends.kernel import WorkerPool  # torch: only for a suite of kernels
    from evo.eval.pipeline import Pipeline

    pool = WorkerPool(run_dir / "scratch", parallel_per_device=max(1, config.workers),
                      task_roots=sorted({t.root.parent.parent for t in kernel}), tasks_held=len(kernel))
    return pool, {t.name: Pipeline(t, workers=config.workers, scratch=member_dir(run_dir, t.name) / "scratch",
                                   pool=pool) for t in kernel}


def _check_config(config: RunConfig) -> None:
    if config.llm and any(part.strip().startswith(_SERVER_ONLY) for part in config.llm.split(",")):
        raise EvoError(f"--llm {config.llm}: the tasks of a suite share one model server; start it apart (`evo llm "
                       "serve`, or `vllm serve`) and give its URL, e.g. --llm http://127.0.0.1:8000")
    if config.seed_from:
        raise EvoError("--seed-from names seeds of one task; seed a task of the suite after it is created with "
                       "`evo seed RUN_DIR/tasks/<task> --from SOURCE`, then `evo resume RUN_DIR`")
    if config.ablation != "none":
        raise EvoError(f"--ablation {config.ablation} is a baseline of one task's search; run it per task")


def _member_config(config: RunConfig, task: str, options: SuiteOptions) -> RunConfig:
    operators = dict(config.operators)
    if options.transfer and "transplant" not in operators and options.transplant_weight > 0:
        operators["transplant"] = options.transplant_weight
    return RunConfig.from_dict({**config.to_dict(), "task": task, "operators": operators}, source="evo run --suite")


def create_suite(run_dir: Path, spec: str, config: RunConfig, options: SuiteOptions) -> SuiteParts:
    """Start a new suite in `run_dir`: resolve its tasks, create each task's run, store the suite's meta."""
    run_dir = Path(run_dir)
    names = resolve_suite(spec)
    _check_config(config)
    tasks = load_suite_tasks(names)
    configs = {t.name: _member_config(config, name, options) for t, name in zip(tasks, names, strict=True)}
    if (run_dir / DB_NAME).is_file():
        meta = suite_meta(run_dir)
        if meta is not None:
            raise EvoError(f"{run_dir} already holds a suite: continue it with `evo resume {run_dir}` or choose "
                           "another --run-dir")
        raise EvoError(f"{run_dir} already holds a run (or an interrupted suite creation): choose another --run-dir")
    new_dir = _make_dir(run_dir)
    lock = RunLock.acquire(run_dir)
    store = Store.in_dir(run_dir)
    members: dict[str, Engine] = {}
    pool = None
    try:
        pool, pipelines = _kernel_pipelines(run_dir, tasks, config)
        for task in tasks:
            where = member_dir(run_dir, task.name)
            engine = Engine.create(where, configs[task.name], pipelines.get(task.name))
            members[task.name] = engine
            engine.store.set_meta(MEMBER_KEY, "../..")
            engine.store.commit()
        embedder = next(iter(members.values())).embedder
        related = related_tasks(tasks, embedder, options.related_k)
        meta = {"tasks": [t.name for t in tasks], "refs": names, "options": asdict(options),
                "config": {**config.to_dict(), "task": "", "time_limit_s": None},
                "related": {t: [r.to_list() for r in rs] for t, rs in related.items()}}
        store.set_meta(SUITE_KEY, meta)
        store.log("suite_created", {"tasks": meta["tasks"], "options": meta["options"]})
    except BaseException:
        parts = SuiteParts(run_dir, store, lock, config, options, members, {}, pool)
        parts.release()
        shutil.rmtree(run_dir / MEMBERS, ignore_errors=True)
        (run_dir / DB_NAME).unlink(missing_ok=True)
        if new_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return SuiteParts(run_dir, store, lock, config, options, members, related, pool)


def open_suite(run_dir: Path, overrides: dict[str, Any] | None = None) -> SuiteParts:
    """Reopen a suite to continue it; `overrides` may change what a run's resume may (evo/run_dir.py)."""
    run_dir = Path(run_dir)
    meta = suite_meta(run_dir)
    if meta is None:
        raise EvoError(f"{run_dir} is not a suite's run directory (no suite in its {DB_NAME}); start one with "
                       "`evo run --suite SPEC --run-dir DIR`")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    fixed = sorted(k for k in given if k not in RESUMABLE)
    if fixed:
        raise EvoError(f"resume cannot change {', '.join(fixed)} of a suite: they are part of its tasks' runs. "
                       "Drop them, or start a new suite with `evo run --suite`")
    _check_writable(run_dir)
    config = RunConfig.from_dict({**meta["config"], **given}, source="evo resume")
    _check_config(config)
    options = SuiteOptions.from_dict(meta.get("options", {}))
    lock = RunLock.acquire(run_dir)
    store = Store.in_dir(run_dir)
    members: dict[str, Engine] = {}
    pool = None
    try:
        done = sum(_done(member_dir(run_dir, name)) for name in meta["tasks"])
        if config.budget < done:
            raise EvoError(f"budget {config.budget} is lower than the {done} evaluations this suite has already "
                           f"done: give --budget {done} or more")
        tasks = load_suite_tasks(meta.get("refs", meta["tasks"]))
        per_task = {k: v for k, v in given.items() if k != "time_limit_s"}
        pool, pipelines = _kernel_pipelines(run_dir, tasks, config)
        for task in tasks:
            where = member_dir(run_dir, task.name)
            members[task.name] = Engine.open(where, per_task, pipelines.get(task.name))
        related = {t: [Relation(str(r[0]), bool(r[1]), float(r[2])) for r in rs]
                   for t, rs in meta.get("related", {}).items()}
        stored = {**config.to_dict(), "task": "", "time_limit_s": None}
        if stored != meta["config"]:
            store.set_meta(SUITE_KEY, {**meta, "config": stored})
            store.log("config_changed", {"changes": {k: v for k, v in per_task.items()}, "by": "resume"})
    except BaseException:
        SuiteParts(run_dir, store, lock, config, options, members, {}, pool).release()
        raise
    return SuiteParts(run_dir, store, lock, config, options, members, related, pool)


def _done(where: Path) -> int:
    store = Store.in_dir(where, readonly=True)
    try:
        return store.count_evaluations()
    finally:
        store.close()
