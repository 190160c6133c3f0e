"""Re-timing a resumed run's elites: the engine calls `retime_elites` before new work (evo/engine.py)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from evo.eval.families import family_of
from evo.program import Status
from evo.replay import new_population, replay_evaluations

if TYPE_CHECKING:
    from evo.engine import Engine


async def retime_elites(engine: Engine, deadline: float | None = None, rounds: int = 3) -> None:
    """On resume, measure every elite again and rebuild the population from the new scores.

    Timings depend on the GPU, its clocks and the session's baseline: an elite timed in an earlier
    session (or on another device) would otherwise keep a score that today's candidates cannot be
    compared with. Each re-measurement replaces the stored score (a `retimed` event keeps the old
    one) and is not an evaluation: the budget is untouched. Rebuilding can raise a program that was
    not an elite before; those are re-timed in a further round (at most `rounds`). The run's time
    limit and stop requests apply: elites not yet started then keep their old score.
    """
    wanted = engine.config.retime_on_resume
    if wanted is None:
        wanted = family_of(engine.task).timed
    if not wanted or engine.stats.done_at_start == 0 or engine.stats.done >= engine.config.budget:
        return
    retimed: set[str] = set()
    limit = asyncio.Semaphore(engine.config.workers)

    async def retime(program_id: str) -> None:
        async with limit:
            if engine._stopping or (deadline is not None and time.monotonic() > deadline):
                return
            program = engine.program(program_id)
            old = program.score
            result = await engine.evaluator.evaluate(program)
        program.status = Status.EVALUATED if result.ok else Status.FAILED
        program.score = result.score if result.ok else None
        program.metrics = result.metrics
        program.error = result.error
        if result.verdict is not None:
            program.verdict = result.verdict
        engine.store.record_retiming(program, {"old_score": old, "score": program.score, "ok": result.ok,
                                             "reason": result.error})
        retimed.add(program_id)

    for _ in range(rounds):
        todo = [pid for pid in engine.population.elite_ids() if pid not in retimed]
        if not todo or engine._stopping or (deadline is not None and time.monotonic() > deadline):
            break
        engine.store.log("retiming", {"elites": len(todo)})
        await asyncio.gather(*(retime(pid) for pid in todo))
        engine.population = new_population(engine.task, engine.config, engine.cell_space)
        replay_evaluations(engine.store, engine.population)
        engine._refresh_stats()
