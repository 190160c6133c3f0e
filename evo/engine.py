"""The loop: sample, propose, screen, evaluate, admit, record. Steady-state, asynchronous.

One producer coroutine makes children (sample parents, call an operator, screen: parse and
near-duplicate check, store) and queues them; `workers` evaluation coroutines take children
from the queue, await the evaluator (sandboxed processes), commit the result, then admit it.
Proposals, evaluations and admissions overlap; there is no generation barrier.

Invariants:
- a slot of the budget is reserved when a child is queued; the run ends with exactly
  `budget` finished evaluations, however often it was stopped and resumed;
- a finished evaluation is committed to the store before the population sees it;
- the population and the novelty index are pure functions of the store: an engine rebuilds
  them by replaying it (evo/replay.py); programs proposed but never evaluated are queued again.

Creating a run directory and reopening one live in evo/run_dir.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evo.admit import record_evaluation
from evo.ast_parse import parse_source
from evo.clean_stop import next_admission, run_with_signals, supervise
from evo.config import RunConfig
from evo.embed import duplicate_threshold, make_embedder
from evo.errors import EvoError, OperatorError
from evo.eval.backends.base import EvalResult, Evaluator
from evo.eval.pipeline import Pipeline
from evo.lessons import LessonKeeper
from evo.llm.client import LLMUnavailable
from evo.llm.engine import ChatLLM, make_llm
from evo.operators import OPERATORS, Operator, ProposalRequest, build_operators
from evo.operators.bandit import OperatorBandit
from evo.operators.choice import OperatorChoice
from evo.operators.llm import llm_operators
from evo.population import EmbeddingCellSpace
from evo.population.novelty import NoveltyArchive
from evo.population.sampling import UniformPool
from evo.program import Program, Status
from evo.proposer import Child, Outcome, ProposalProcess, ProposalProcessDied
from evo.replay import new_population, rebuild_population, replay_embeddings, replay_evaluations
from evo.report.track import Trackers
from evo.retiming import retime_elites
from evo.run_dir import OpenedRun, RunLock, create_run, open_run
from evo.stats import RunStats
from evo.store import Store
from evo.store.reviews import caught as caught_hacks
from evo.task import Task

# Re-exported: callers of `evo.engine` that predate evo/replay.py and evo/run_dir.py.
__all__ = ["Engine", "RunStats", "new_population", "rebuild_population", "replay_evaluations"]

_CACHE_SIZE = 20000
_LLM_PAUSE_S = 5.0
log = logging.getLogger(__name__)


class Engine:
    """A run: its store, task, population and evaluator. Build with `create` or `open`, then `run`."""

    def __init__(self, run_dir: Path, store: Store, task: Task, config: RunConfig, evaluator: Evaluator | None):
        self.run_dir = Path(run_dir)
        self.store = store
        self.task = task
        self.config = config
        if evaluator is None and config.backend == "ray":  # a Ray cluster's actors (evo/eval/backends/ray.py)
            from evo.eval.backends.ray import RayEvaluator

            evaluator = RayEvaluator(task, config.workers, self.run_dir / "scratch", address=config.ray_address)
        # Every candidate goes through the pipeline (screen, backend, score, full audit): the only way to a score.
        self.evaluator: Evaluator = evaluator if isinstance(evaluator, Pipeline) else \
            Pipeline(task, evaluator, workers=config.workers, scratch=self.run_dir / "scratch")
        self.embedder = make_embedder(config.embedder)
        self.llm_client: ChatLLM | None = None
        registry: dict[str, Callable[[], Operator]] = dict(OPERATORS)
        op_weights = config.operator_weights()
        if config.llm:
            roster = None
            if config.llm == "ray" or config.llm.startswith("ray:"):  # replicas followed as Ray moves them
                from evo.eval.backends.ray_llm import replica_roster

                roster = replica_roster(config.llm.removeprefix("ray").removeprefix(":").strip() or None)
            client = self.llm_client = make_llm(config.llm, log_dir=self.run_dir, serve_args=config.llm_serve_args,
                                                roster=roster)
            llm_registry, op_weights = llm_operators(client, op_weights, n=config.llm_samples,
                                                     max_tokens=config.llm_max_tokens,
                                                     temperature=config.llm_temperature)
            registry.update(llm_registry)  # one operator per (mode, model): the bandit's arms
        elif any(name.startswith("llm_") for name in config.operators):
            raise EvoError("the llm_* operators need a model server: give --llm URL (see `evo run --help`)")
        self.operators: list[tuple[Operator, float]] = build_operators(op_weights, registry)
        # Lessons every `lessons_every` evaluations and on resume, in the prompts (evo/lessons.py).
        self.lessons = LessonKeeper(store, task, config.lessons_every, self.llm_client, config.llm_max_tokens,
                                    config.lessons_from)
        if config.review and self.llm_client is not None and isinstance(self.evaluator, Pipeline):
            self._attach_reviewer(self.evaluator, self.llm_client)
        selection = config.operator_selection
        if selection == "auto":
            selection = "bandit" if config.llm else "weights"
        self.bandit: OperatorBandit | None = None
        if selection == "bandit":
            self.bandit = OperatorBandit([op.name for op, _ in self.operators], [w for _, w in self.operators])
            self.bandit.replay(*store.operator_totals())
        # Model calls hold at most the configured streams; `_producer` adds one for the other operators.
        self.choice = OperatorChoice(self.operators, self.bandit, config.proposal_concurrency or 2 * config.workers)
        self.novelty = NoveltyArchive(self.embedder.dim, k=config.novelty_k,
                                      duplicate_threshold=duplicate_threshold(self.embedder, config.duplicate_threshold))
        self.cell_space: EmbeddingCellSpace | None = None
        if config.cells == "embedding":
            self.cell_space = EmbeddingCellSpace.from_dict(store.get_meta("cell_space"))
        self.population = new_population(task, config, self.cell_space)
        self.stats = RunStats(budget=config.budget)
        self.rng = np.random.default_rng([config.seed, store.count_events()])
        self._cache: OrderedDict[str, Program] = OrderedDict()
        self._task_prompt = task.prompt()
        self._stopping = False
        self._stop_reason = ""
        self.signal: int | None = None  # the signal (SIGINT, SIGTERM) that stopped this invocation, if any
        self._lock: RunLock | None = None  # the run directory's lock, set by `create`/`open`
        self._reserved = 0  # finished + queued + being evaluated
        self._admitted: asyncio.Event | None = None  # created inside the event loop
        # The non-LLM operators and the embedder run in a proposal process when the config asks
        # for one (started by `run_async`); None: everything runs in this loop.
        self._proposer: ProposalProcess | None = None
        self._offloaded = {op.name for op, _ in self.operators if op.name in OPERATORS}
        # The ablations' parents (config.ablation): None for the search itself (the population samples).
        self._pool: UniformPool | None = None if config.ablation == "none" else UniformPool()
        # A suite run's elites of related tasks for one operator call, labelled with their task
        # (evo/suite/transfer.py); None in a run of one task.
        self.foreign: Callable[[str, np.random.Generator], list[Program]] | None = None
        # --track: figures sent to TensorBoard/MLflow from a thread behind a bounded queue (evo/report/track.py)
        self.trackers: Trackers | None = Trackers.for_run(config.track, self.run_dir)
        self._rebuild()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: Path, config: RunConfig, evaluator: Evaluator | None = None) -> Engine:
        """Start a new run in `run_dir`: store the config and the task's seeds (evo/run_dir.py).

        The engine holds the run directory's lock until `close` (or its process ends).
        """
        return cls._build(run_dir, create_run(run_dir, config), evaluator, fresh=True)

    @classmethod
    def open(cls, run_dir: Path, overrides: dict[str, Any] | None = None,
             evaluator: Evaluator | None = None) -> Engine:
        """Reopen a run to continue it; `overrides` may change what `run_dir.RESUMABLE` names."""
        return cls._build(run_dir, open_run(run_dir, overrides), evaluator, fresh=False)

    @classmethod
    def _build(cls, run_dir: Path, opened: OpenedRun, evaluator: Evaluator | None, fresh: bool) -> Engine:
        try:
            engine = cls(run_dir, opened.store, opened.task, opened.config, evaluator)
        except BaseException:
            # A new run that cannot start leaves nothing behind; a reopened one is left as it was.
            opened.discard() if fresh else opened.release()
            raise
        engine._lock = opened.lock
        return engine

    def _attach_reviewer(self, pipeline: Pipeline, llm: ChatLLM) -> None:
        """The model reviewer of suspicious passes (evo/audit/reviewer.py), knowing the hacks this run caught
        before and, for the bpb jump, the best result so far."""
        from evo.audit.reviewer import Reviewer, ReviewPolicy

        reviewer = Reviewer(llm, self.task, ReviewPolicy(max_tokens=self.config.llm_max_tokens),
                            learned=caught_hacks(self.store))
        for best in self.store.best_programs(limit=1):
            reviewer.observe(best.metrics)
        pipeline.reviewer = reviewer

    def _rebuild(self) -> None:
        """Replay the store into the novelty index and the population."""
        replay_embeddings(self.store, self.novelty, self.embedder.dim)
        self.stats.done = replay_evaluations(self.store, self.population)
        self.stats.done_at_start = self.stats.done
        self.stats.count_stored(self.store)
        self._refresh_stats()
        if self._pool is not None:
            self._pool = UniformPool(self.store.valid_ids("seed" if self.config.ablation == "best-of-n" else None))
        seeds = [p for p in self.store.best_programs(limit=1_000) if p.operator == "seed"]
        if seeds:
            self.stats.seed_score = seeds[0].score

    def _refresh_stats(self) -> None:
        best = self.population.best()
        if best is not None:
            self.stats.best_id, self.stats.best_score = best
        self.stats.coverage = self.population.coverage
        self.stats.qd_score = self.population.qd_score

    def program(self, program_id: str) -> Program:
        """A program by id, from the cache or the store."""
        p = self._cache.get(program_id)
        if p is None:
            p = self.store.get_program(program_id)
            self._cache[program_id] = p
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return p

    # -- proposing ----------------------------------------------------------------------
    async def propose(self) -> list[Program]:
        """One operator call: sample parents, make children, screen them, store them.

        The operator is chosen among those free to run (`OperatorChoice`), then again among those
        that apply to the parents sampled. Raises `LLMUnavailable` when the model server is away.
        """
        index = self.choice.first(self.rng)
        island = int(self.rng.integers(self.config.islands))
        parent_ids, inspiration_ids = self._sample(island, self.choice.operators[index].arity)
        if not parent_ids:
            return []
        parents = [self.program(pid) for pid in parent_ids]
        settled = self.choice.settle(index, parents, self.rng)
        if settled is None:
            self.stats.rejections["no_operator_applies"] += 1
            return []
        op = self.choice.operators[settled]
        with self.choice.calling(settled):
            try:
                return await self._call(op, parents[: op.arity], inspiration_ids, island)
            except LLMUnavailable as e:
                # The server is down or restarting: never fail candidates for it. The pause keeps the
                # model slot, so that the other streams go on with the other operators meanwhile.
                self.stats.llm_unavailable += 1
                self.store.log("llm_unavailable", {"reason_kind": "llm_unavailable", "reason": str(e)[:2000]})
                await asyncio.sleep(_LLM_PAUSE_S)
                raise

    def _sample(self, island: int, n_parents: int) -> tuple[list[str], list[str]]:
        """Parents and inspirations: MAP-Elites selection, or an ablation's uniform draw (no archive)."""
        if self._pool is None:
            return self.population.sample(island, self.rng, n_parents=n_parents)
        parents = self._pool.sample(n_parents, self.rng)
        if self.config.ablation == "best-of-n":
            return parents, []  # independent children of the seeds: nothing of the archive is shown
        return parents, self._pool.sample_distinct(self.config.n_inspirations, parents, self.rng)

    async def _call(self, op: Operator, parents: list[Program], inspiration_ids: list[str],
                    island: int) -> list[Program]:
        parent_ids = [p.id for p in parents]
        request = ProposalRequest(parents=parents, inspirations=[self.program(i) for i in inspiration_ids],
                                  rng=self.rng, task_prompt=self._task_prompt,
                                  feedback=[p.error for p in parents if p.error], lessons=self.lessons.for_prompt(),
                                  foreign=[] if self.foreign is None else self.foreign(op.name, self.rng))
        call = {"operator": op.name, "parents": parent_ids, "island": island}
        if self._proposer is not None and op.name in self._offloaded:
            seed = int(self.rng.integers(2**63))
            try:
                outcome = await self._proposer.propose(op.name, parents, seed, parse=True)
            except ProposalProcessDied as e:
                await self._lose_proposer(str(e))
            else:
                return self._take_outcome(outcome, island, call)
        start = time.perf_counter()
        try:
            proposals = await op.propose(request)
        except OperatorError as e:
            self._learn_call(op.name, e.meta)
            self._reject(None, "operator_error", str(e), {**call, **e.meta})
            return []
        call["seconds"] = round(time.perf_counter() - start, 6)
        if proposals and "llm" in proposals[0].meta:
            call["llm"] = proposals[0].meta["llm"]
        self._learn_call(op.name, call)
        children = []
        for prop in proposals:
            child = Program(source=prop.source, parents=tuple(prop.parents), operator=prop.operator,
                            island=island, meta=dict(prop.meta))
            accepted = self._screen(child, call, parse=not getattr(op, "checks_syntax", False))
            if accepted:
                children.append(child)
        return children

    def _take_outcome(self, outcome: Outcome, island: int, call: dict[str, Any]) -> list[Program]:
        """Screen and store the children that the proposal process made (parsed and embedded there)."""
        if outcome.error is not None:
            meta = outcome.error_meta or {}
            self._learn_call(str(call["operator"]), meta)
            self._reject(None, "operator_error", outcome.error, {**call, **meta})
            return []
        call["seconds"] = round(outcome.seconds, 6)
        self._learn_call(str(call["operator"]), call)
        children = []
        for made in outcome.children:
            child = Program(source=made.source, parents=made.parents, operator=made.operator,
                            island=island, meta=made.meta)
            if self._screen(child, call, parse=False, made=made):
                children.append(child)
        return children

    async def _lose_proposer(self, reason: str) -> None:
        """The proposal process died: log it once and carry on with the operators in this loop."""
        proposer, self._proposer = self._proposer, None
        if proposer is not None:
            self.store.log("proposal_process_lost", {"reason": reason[:2000]})
            await proposer.close()

    def _screen(self, child: Program, call: dict[str, Any], parse: bool = True, made: Child | None = None) -> bool:
        self.stats.proposals += 1
        if made is not None and made.parse_error is not None:
            line, msg = made.parse_error
            self._reject(child, "parse_error", f"line {line}: {msg}", call)
            return False
        if parse:  # 1-2 ms a program: skipped for operators whose children always parse
            try:
                parse_source(child.text)
            except SyntaxError as e:
                self._reject(child, "parse_error", f"line {e.lineno}: {e.msg}", call)
                return False
        vector = made.vector if made is not None and made.vector is not None else self.embedder.embed([child.text])[0]
        seen = self.novelty.assess(vector)
        if seen.duplicate:
            self._reject(child, "near_duplicate", f"cosine {seen.similarity:.5f} to {seen.nearest}", call)
            return False
        child.meta["novelty"] = round(seen.novelty, 6)
        if self.cell_space is not None:
            child.descriptors = self._embedding_descriptors(vector)
        self.store.add_program(child, vector, events=[("operator_call", call),
                                                      ("proposed", {"operator": child.operator,
                                                                    "novelty": child.meta["novelty"]})],
                               commit=False)  # committed with the next finished evaluation
        self.novelty.add_assessed(child.id, seen)  # the vector normalised once, by `assess`
        self._cache[child.id] = child
        return True

    def _learn_call(self, operator: str, meta: dict[str, Any]) -> None:
        if self.bandit is not None:
            llm = meta.get("llm")
            self.bandit.record_call(operator, int(llm.get("completion_tokens", 0)) if isinstance(llm, dict) else 0)

    def _embedding_descriptors(self, vector: np.ndarray) -> tuple[float, ...]:
        assert self.cell_space is not None
        return tuple(float(x) for x in self.cell_space.project(vector[None, :])[0])

    def _reject(self, child: Program | None, kind: str, reason: str, call: dict[str, Any]) -> None:
        if kind == "operator_error":
            self.stats.operator_errors[str(call["operator"])] += 1
        else:
            self.stats.rejections[kind] += 1
        data = {"reason_kind": kind, "reason": reason}
        if child is None:
            self.store.log("operator_failed", {**call, **data})
            return
        child.status = Status.REJECTED
        child.error = reason
        self.store.add_program(child, None, events=[("operator_call", call), ("rejected", data)], commit=False)

    # -- evaluating and admitting ---------------------------------------------------------
    def record(self, program: Program, result: EvalResult) -> None:
        """Commit one finished evaluation, then admit it: in that order, always (evo/admit.py)."""
        record_evaluation(self, program, result)

    async def _producer(self, queue: asyncio.Queue[Program | None]) -> None:
        for program in self.store.pending_programs():
            if self._stopping or self._reserved >= self.config.budget:
                break
            self._reserved += 1
            await queue.put(program)
        # Without a model server, operator calls take no time waiting: one stream, or two when a
        # proposal process makes children while this loop screens and stores the last ones.
        default = 2 * self.config.workers if self.llm_client else (2 if self._proposer else 1)
        n = self.config.proposal_concurrency or default
        if self.choice.model.any() and self.choice.others:
            n += 1  # a stream that model calls never hold: the other operators go on while a model is away
        elif self.choice.model.any():
            log.warning("every operator of this run calls the LLM: while its server is away or loading, no "
                        "child is made and the workers wait. Give another operator a weight to go on meanwhile "
                        "(e.g. operators = {llm_diff = 1.0, constants = 0.3} in --config).")
        await asyncio.gather(*(self._propose_loop(queue) for _ in range(n)))

    async def _propose_loop(self, queue: asyncio.Queue[Program | None]) -> None:
        """One stream of operator calls; several run at once when calls wait on a model server."""
        budget = self.config.budget
        rejections = 0
        while not self._stopping and self._reserved < budget:
            if self.population.num_elites == 0:
                if self._reserved == self.stats.done and queue.empty():
                    first = next(self.store.iter_programs(statuses=[Status.FAILED], batch=1), None)
                    err = (first.error or "").strip() if first is not None else ""
                    why = f" The first failure: {err}" + ("" if err.endswith(("?", ".")) else ".") if err else ""
                    raise EvoError("no valid program to mutate: every seed failed its evaluation. "
                                   f"Failures so far: {dict(self.stats.failures)}.{why} Check a seed with "
                                   f"`evo eval`; once fixed, `evo resume {self.run_dir}` evaluates the seeds again.")
                assert self._admitted is not None
                await next_admission(self._admitted)
                continue
            try:
                children = await self.propose()
            except LLMUnavailable:
                continue  # counted, logged and paused by `propose`
            if not children:
                rejections += 1
                if rejections >= self.config.max_consecutive_rejections:
                    raise EvoError(f"{rejections} proposals in a row were rejected ({dict(self.stats.rejections)}; "
                                   f"operator errors {dict(self.stats.operator_errors)}): the operators cannot make new programs "
                                   "from this population; try other operators or a lower duplicate_threshold")
                if rejections % 50 == 0:
                    await asyncio.sleep(0)
                continue
            rejections = 0
            for child in children:
                if self._reserved >= budget:
                    break  # stays `proposed` in the store; a resume with a bigger budget evaluates it
                self._reserved += 1
                await queue.put(child)

    async def _worker(self, queue: asyncio.Queue[Program | None]) -> None:
        while True:
            program = await queue.get()
            if program is None or self._stopping:
                return
            result = await self.evaluator.evaluate(program)
            self.record(program, result)

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop making children; evaluations already running finish and are recorded."""
        if not self._stopping:
            self._stopping = True
            self._stop_reason = reason

    async def run_async(self, on_tick: Callable[[RunStats], None] | None = None) -> RunStats:
        """Run until the budget is spent, the time limit passes, or `request_stop` is called."""
        self._admitted = asyncio.Event()
        self._reserved = self.stats.done
        self.stats.started = time.monotonic()
        self.store.log("run_started", {"done": self.stats.done, "budget": self.config.budget})
        # torch (imported by pyribs) leaves ~340k tracked objects; full collections over them cost
        # ~0.35 s each on the hot path. Freeze what exists now (no collection first: it would cost
        # that same 0.35-1 s once per run, and what garbage there is stays small) and collect young
        # objects less often (from here: the lesson of a resumed run made ~20 collections at the defaults).
        gc.freeze()
        gc_threshold = gc.get_threshold()
        gc.set_threshold(50_000, 20, 100)
        deadline = None if self.config.time_limit_s is None else time.monotonic() + self.config.time_limit_s
        producer: asyncio.Task[None] | None = None
        try:
            if self.stats.done_at_start > 0:
                self.lessons.resumed(self.stats.done, self.population)
            await self._start_proposer()
            await retime_elites(self, deadline)
            queue: asyncio.Queue[Program | None] = asyncio.Queue(maxsize=self.config.workers)
            workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.config.workers)]
            producer = asyncio.create_task(self._producer(queue))
            await supervise(workers, producer, queue, deadline, self.request_stop, lambda: self._stopping,
                            lambda: None if on_tick is None else on_tick(self.stats))
        finally:
            gc.set_threshold(*gc_threshold)
            gc.unfreeze()
            if producer is not None and not producer.done():
                producer.cancel()
            if self._proposer is not None:
                await self._proposer.close()
                self._proposer = None
            await self.lessons.close()  # a lesson the model is writing, before its client closes
            if self.llm_client is not None:
                await self.llm_client.aclose()
            reason = self._stop_reason or ("budget spent" if self.stats.done >= self.config.budget else "stopped")
            self.store.log("run_stopped", {"reason": reason, "done": self.stats.done})
            if self.trackers is not None:
                self.trackers.observe_engine(self, force=True)
                report, self.trackers = self.trackers.close(), None
                self.store.log("trackers", dataclasses.asdict(report))
                log.info(report.line())
        if on_tick is not None:
            on_tick(self.stats)
        return self.stats

    async def _start_proposer(self) -> None:
        if self.config.proposal_processes < 1 or not self._offloaded or self._proposer is not None:
            return
        proposer = ProposalProcess(sorted(self._offloaded), self.config.embedder,
                                   log_path=self.run_dir / "proposer.log")
        try:
            await proposer.start()
        except (ProposalProcessDied, OSError) as e:
            self.store.log("proposal_process_lost", {"reason": str(e)[:2000]})
            return  # the operators run in this loop instead
        self._proposer = proposer

    def run(self, on_tick: Callable[[RunStats], None] | None = None) -> RunStats:
        """Run with Ctrl-C (SIGINT) and SIGTERM mapped to a clean stop; a second Ctrl-C aborts."""

        try:
            stats = run_with_signals(lambda: self.run_async(on_tick), self._on_signal)
        except BaseException:
            # Abandoned evaluations die at their own deadline inside the sandbox; their
            # programs stay `proposed` and are evaluated again on resume.
            self.store.close()
            self._release_lock()
            raise
        self.close()
        return stats

    def _on_signal(self, sig: int) -> None:
        if self._stopping:
            raise KeyboardInterrupt  # second signal: abandon running evaluations; resume redoes them
        self.signal = sig
        self.request_stop("interrupted")

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def close(self) -> None:
        """Close the evaluator and the store, then let other processes open the run directory."""
        self.evaluator.close()
        self.store.close()
        self._release_lock()
