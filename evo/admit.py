"""Recording a finished evaluation and admitting it: the engine's step after every evaluation.

Apart from the loop (evo/engine.py), which calls `record_evaluation` for each result its workers receive.
The order is the house's invariant: the evaluation (and its admission decision) is committed to the store
first, and only then does the population, the bandit or the progress display see it. A program whose
evaluation the store already holds (a resumed run re-queued it) is never counted twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evo.eval.backends.base import EvalResult
from evo.program import Program, Status
from evo.store.reviews import add_review

if TYPE_CHECKING:
    from evo.engine import Engine


def record_evaluation(engine: Engine, program: Program, result: EvalResult) -> None:
    """Commit one finished evaluation of `engine`'s run, then admit it: in that order, always."""
    program.status = Status.EVALUATED if result.ok else Status.FAILED
    program.score = result.score
    program.metrics = result.metrics
    program.error = result.error
    if result.verdict is not None:
        program.verdict = result.verdict
    if engine.cell_space is None:
        program.descriptors = result.descriptors
    elif not program.descriptors:  # seeds and programs reloaded on resume
        program.descriptors = engine._embedding_descriptors(engine.embedder.embed([program.text])[0])
    data: dict[str, Any] = {"ok": result.ok, "score": result.score, "wall_s": round(result.wall_s, 4)}
    if not result.ok:
        data.update(reason_kind=result.failure or "failed", reason=result.error)
    admission = None
    decision = None
    if result.ok and result.score is not None:
        decision = engine.population.decide(program.id, program.island, result.score, program.descriptors)
        data["admission"] = decision.status
        if decision.status != "rejected":
            admission = {"cell": decision.cell, "status": decision.status, "island": program.island,
                         "previous": decision.previous, "previous_score": decision.previous_score}
    if result.review is not None:
        data["review"] = {"verdict": result.review.get("verdict"), "outcome": result.review.get("outcome")}
    if not engine.store.record_evaluation(program, data, admission):
        return  # already recorded: never count twice
    if result.review is not None:
        add_review(engine.store, program.id, engine.task.name, result.review)
    stats = engine.stats
    stats.done += 1
    engine.lessons.evaluated(stats.done, engine.population)
    if not result.ok:
        stats.failures[result.failure or "failed"] += 1
    if decision is not None and result.score is not None:
        if admission is not None and engine.bandit is not None:
            engine.bandit.record_admission(program.operator)
        engine.population.admit(program.id, program.island, result.score, program.descriptors)
        pool = engine._pool
        if pool is not None and (engine.config.ablation == "random-parent" or program.operator == "seed"):
            pool.add(program.id)
        if engine.population.last_migrations:
            engine.store.log("migration", {"moves": engine.population.last_migrations})
        if program.operator == "seed" and (stats.seed_score is None or result.score > stats.seed_score):
            stats.seed_score = result.score
        engine._refresh_stats()
        if engine._admitted is not None:
            engine._admitted.set()
    if engine.trackers is not None:
        engine.trackers.observe_engine(engine)  # never blocks: a full queue drops the sample
