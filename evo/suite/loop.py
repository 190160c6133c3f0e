"""One search over many tasks: a population per task, one shared budget, a bandit that spends it.

    suite = Suite.create(run_dir, "kernels/*_fwd", config)    # or Suite.open(run_dir) to continue one
    suite.run()                                              # until the budget is spent or it is stopped

Each task has its own engine (evo/engine.py): its population, operators, evaluator and store (see
evo/suite/run_dir.py for the directory). The suite owns the loop instead of the engines: proposal streams
ask the task bandit (evo/suite/bandit.py) which task to propose for, call that task's engine to make and
screen children, and queue them; `workers` evaluation coroutines take children of any task, evaluate them
with their task's evaluator and record them through their task's engine, which commits each evaluation to
the task's store before its population sees it. The budget counts finished evaluations of all tasks.

Invariants, as for one task: a budget slot is reserved when a child is queued, so a suite ends with exactly
`budget` evaluations however often it was stopped and resumed; children queued but not evaluated stay
`proposed` in their task's store and are evaluated first on resume; an evaluation the store already holds
is never counted again. The bandit is replayed from the tasks' stores on resume, so it is a pure function of
them. With transfer on, each engine's `foreign` hook offers elites of related tasks to its operators
(evo/suite/transfer.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evo.clean_stop import next_admission, run_with_signals, supervise
from evo.config import RunConfig
from evo.errors import EvoError
from evo.llm.client import LLMUnavailable
from evo.program import Program
from evo.retiming import retime_elites
from evo.store.transfer import evaluated_in_order
from evo.suite.bandit import TaskBandit
from evo.suite.run_dir import SuiteOptions, SuiteParts, create_suite, open_suite
from evo.suite.transfer import TransferSource

Item = tuple[str, Program] | None


class Suite:
    """A suite run: build with `create` or `open`, then `run` (or `await run_async()`), then it is closed."""

    def __init__(self, parts: SuiteParts):
        self.parts = parts
        self.run_dir = parts.run_dir
        self.store = parts.store
        self.config: RunConfig = parts.config
        self.options = parts.options
        self.members = parts.members
        self.tasks = list(self.members)
        self.bandit = TaskBandit(self.tasks, self.options.floor, self.options.window)
        self.transfer: dict[str, TransferSource] = {}
        if self.options.transfer:
            for name, engine in self.members.items():
                engine.foreign = self.transfer[name] = TransferSource(
                    name, parts.related.get(name, []), self.members, self.options.transfer_rate)
        self._replay()
        self.rng = np.random.default_rng([self.config.seed, self.store.count_events()])
        self.done_at_start = self.done
        self.started = time.monotonic()
        self.exhausted: dict[str, str] = {}  # tasks that can make no more children, and why
        self.signal: int | None = None
        self._stopping = False
        self._stop_reason = ""
        self._reserved = 0
        self._inflight: Counter[str] = Counter()
        self._admitted: asyncio.Event | None = None

    @classmethod
    def create(cls, run_dir: Path, spec: str, config: RunConfig, options: SuiteOptions | None = None) -> Suite:
        """Start a new suite over the tasks `spec` names (a family, names, globs; comma separated)."""
        return cls(create_suite(run_dir, spec, config, options or SuiteOptions()))

    @classmethod
    def open(cls, run_dir: Path, overrides: dict[str, Any] | None = None) -> Suite:
        """Reopen a suite to continue it (`overrides`: budget, workers, time limit, operators, llm, ...)."""
        return cls(open_suite(run_dir, overrides))

    def _replay(self) -> None:
        """The bandit from the tasks' stores: their evaluations in order, and their proposal calls."""
        grants = {}
        for name, engine in self.members.items():
            for _pid, seed, score in evaluated_in_order(engine.store):
                self.bandit.observe(name, score, seed=seed)
            counts = engine.store.event_counts()
            grants[name] = counts.get("operator_call", 0) + counts.get("operator_failed", 0)
        self.bandit.restore_grants(grants)

    @property
    def done(self) -> int:
        """Finished evaluations of all tasks."""
        return sum(e.stats.done for e in self.members.values())

    @property
    def budget(self) -> int:
        return self.config.budget

    @property
    def evals_per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return 60.0 * (self.done - self.done_at_start) / elapsed if elapsed > 0 else 0.0

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop making children; evaluations already running finish and are recorded."""
        if not self._stopping:
            self._stopping = True
            self._stop_reason = reason

    # -- the loop ---------------------------------------------------------------------------
    def _eligible(self) -> list[str]:
        return [t for t in self.tasks if t not in self.exhausted and self.members[t].population.num_elites > 0]

    def _check_dead(self) -> None:
        """A task whose seeds all failed, with nothing of it in flight, can make no child: set it aside."""
        for name, engine in self.members.items():
            if name not in self.exhausted and engine.population.num_elites == 0 and self._inflight[name] == 0:
                failures = dict(engine.stats.failures)
                self.exhausted[name] = f"every seed failed its evaluation ({failures})"
                self.store.log("task_set_aside", {"task": name, "reason": self.exhausted[name]})
        if len(self.exhausted) == len(self.tasks):
            raise EvoError(f"no task of the suite can make children: {self.exhausted}. Check a seed with `evo eval`;"
                           f" once fixed, `evo resume {self.run_dir}` evaluates the seeds again.")

    async def _propose_loop(self, queue: asyncio.Queue[Item]) -> None:
        rejections: Counter[str] = Counter()
        while not self._stopping and self._reserved < self.budget:
            eligible = self._eligible()
            if not eligible:
                if queue.empty() and not any(self._inflight.values()):
                    self._check_dead()
                assert self._admitted is not None
                await next_admission(self._admitted)
                continue
            name = self.bandit.choose(self.rng, eligible)
            self.bandit.grant(name)
            try:
                children = await self.members[name].propose()
            except LLMUnavailable:
                continue  # counted, logged and paused by the task's engine
            if not children:
                rejections[name] += 1
                if rejections[name] >= self.config.max_consecutive_rejections:
                    self.exhausted[name] = f"{rejections[name]} proposals in a row were rejected"
                    self.store.log("task_set_aside", {"task": name, "reason": self.exhausted[name]})
                    if len(self.exhausted) == len(self.tasks):
                        raise EvoError(f"no task of the suite can make new programs: {self.exhausted}; try other "
                                       "operators or a lower duplicate_threshold")
                if sum(rejections.values()) % 50 == 0:
                    await asyncio.sleep(0)
                continue
            rejections[name] = 0
            for child in children:
                if self._reserved >= self.budget:
                    break  # stays `proposed` in its task's store; a resume with a bigger budget evaluates it
                await self._put(queue, name, child)

    async def _put(self, queue: asyncio.Queue[Item], name: str, program: Program) -> None:
        self._reserved += 1
        self._inflight[name] += 1
        await queue.put((name, program))

    async def _producer(self, queue: asyncio.Queue[Item]) -> None:
        for name, engine in self.members.items():
            for program in engine.store.pending_programs():
                if self._stopping or self._reserved >= self.budget:
                    return
                await self._put(queue, name, program)
        n = self.config.proposal_concurrency or (2 * self.config.workers if self.config.llm else 1)
        await asyncio.gather(*(self._propose_loop(queue) for _ in range(n)))

    async def _worker(self, queue: asyncio.Queue[Item]) -> None:
        while True:
            item = await queue.get()
            if item is None or self._stopping:
                return
            name, program = item
            engine = self.members[name]
            result = await engine.evaluator.evaluate(program)
            before = engine.stats.done
            engine.record(program, result)  # committed to the task's store, then admitted
            if engine.stats.done > before:
                self.bandit.observe(name, result.score if result.ok else None, seed=program.operator == "seed")
            self._inflight[name] -= 1

    async def run_async(self, on_tick: Callable[[Suite], None] | None = None) -> Suite:
        """Run until the budget is spent, the time limit passes, or `request_stop` is called."""
        self._admitted = asyncio.Event()
        self._reserved = self.done
        self.started = time.monotonic()
        deadline = None if self.config.time_limit_s is None else time.monotonic() + self.config.time_limit_s
        self.store.log("suite_started", {"done": self.done, "budget": self.budget})
        for engine in self.members.values():
            engine._admitted = self._admitted  # an admission in any task wakes a stream waiting for elites
            engine.stats.started = self.started
            engine.store.log("run_started", {"done": engine.stats.done, "budget": self.budget, "suite": True})
            if engine.stats.done_at_start > 0:
                engine.lessons.resumed(engine.stats.done, engine.population)
        producer: asyncio.Task[None] | None = None
        try:
            await asyncio.gather(*(retime_elites(e, deadline) for e in self.members.values()))
            queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=self.config.workers)
            workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.config.workers)]
            producer = asyncio.create_task(self._producer(queue))
            await supervise(workers, producer, queue, deadline, self.request_stop, lambda: self._stopping,
                            lambda: None if on_tick is None else on_tick(self))
        finally:
            if producer is not None and not producer.done():
                producer.cancel()
            reason = self._stop_reason or ("budget spent" if self.done >= self.budget else "stopped")
            for engine in self.members.values():
                engine._admitted = None
                await engine.lessons.close()
                if engine.llm_client is not None:
                    await engine.llm_client.aclose()
                engine.store.log("run_stopped", {"reason": reason, "done": engine.stats.done, "suite": True})
                if engine.trackers is not None:  # --track: each task's figures, closed as a run of its own closes them
                    engine.trackers.observe_engine(engine, force=True)
                    report, engine.trackers = engine.trackers.close(), None
                    engine.store.log("trackers", dataclasses.asdict(report))
            self.store.log("suite_stopped", {"reason": reason, "done": self.done, "allocation": self.bandit.state(),
                                             "set_aside": self.exhausted})
        if on_tick is not None:
            on_tick(self)
        return self

    def run(self, on_tick: Callable[[Suite], None] | None = None) -> Suite:
        """Run with Ctrl-C (SIGINT) and SIGTERM mapped to a clean stop (a second Ctrl-C aborts); then close."""

        try:
            return run_with_signals(lambda: self.run_async(on_tick), self._on_signal)
        finally:
            self.close()

    def _on_signal(self, sig: int) -> None:
        if self._stopping:
            raise KeyboardInterrupt  # second signal: abandon running evaluations; resume redoes them
        self.signal = sig
        self.request_stop("interrupted")

    def close(self) -> None:
        """Close every task's engine and the suite's store; let other processes open the directories."""
        self.parts.release()

    # -- what it found ----------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """Per task: evaluations, seed and best value (the task's units), proposals granted, current value."""
        state = self.bandit.state()
        out = []
        for name, engine in self.members.items():
            s = engine.stats
            out.append({"task": name, "evaluations": s.done, "metric": engine.task.config.metric,
                        "seed": None if s.seed_score is None else engine.task.orient(s.seed_score),
                        "best": None if s.best_score is None else engine.task.orient(s.best_score),
                        "granted": state[name]["granted"], "value": state[name]["value"],
                        "offered": self.transfer[name].offered if name in self.transfer else 0,
                        "set_aside": self.exhausted.get(name)})
        return out
