"""Elites re-timed on resume: the stored scores, the live population and its replay agree."""

from __future__ import annotations

import asyncio
from pathlib import Path

from evo.config import RunConfig
from evo.engine import Engine, rebuild_population
from evo.eval.backends.base import EvalResult
from evo.program import Program


class DeviceEvaluator:
    """Scores from the program's text, scaled by a per-"device" factor, as GPU timings would be."""

    def __init__(self, factor: float, workers: int = 2, fail: set[str] | None = None):
        self.workers = workers
        self.factor = factor
        self.fail = fail or set()
        self.calls: list[str] = []

    async def evaluate(self, program: Program) -> EvalResult:
        await asyncio.sleep(0)
        self.calls.append(program.id)
        if program.id in self.fail:
            return EvalResult(ok=False, failure="invalid", error="wrong answer on this device")
        n = len(program.text)
        return EvalResult(ok=True, score=self.factor * (1 + n % 997), descriptors=((n % 60) / 1000.0, (n % 70) / 100.0))

    def close(self) -> None:
        return None


def _config(**kw: object) -> RunConfig:
    base: dict[str, object] = dict(task="math/circle_packing_26", budget=60, workers=2, retime_on_resume=True,
                                   proposal_processes=0)
    base.update(kw)
    return RunConfig.from_dict(base)


def test_resume_retimes_every_elite_and_keeps_the_budget(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    engine = Engine.create(run_dir, _config(), DeviceEvaluator(1.0))
    asyncio.run(engine.run_async())
    elites_before = engine.population.elite_ids()
    old_scores = {pid: engine.store.get_program(pid).score for pid in elites_before}
    engine.close()

    slower = DeviceEvaluator(0.5)  # the same programs measure half as good on the new device
    engine = Engine.open(run_dir, {"budget": 80}, slower)
    stats = asyncio.run(engine.run_async())
    assert set(slower.calls[: len(elites_before)]) == set(elites_before)  # retimed before any new work
    assert stats.done == 80 and engine.store.count_evaluations() == 80  # retimings are not evaluations
    assert engine.store.count_events("retimed") >= len(elites_before)
    for pid, old in old_scores.items():
        assert old is not None and engine.store.get_program(pid).score == old * 0.5
    # The live population is exactly what a replay of the store gives.
    assert rebuild_population(engine.store, engine.task, engine.config).tables() == engine.population.tables()
    engine.close()


def test_an_elite_that_fails_its_retiming_loses_its_place(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    engine = Engine.create(run_dir, _config(budget=40), DeviceEvaluator(1.0))
    asyncio.run(engine.run_async())
    best_id = engine.population.best()[0]  # type: ignore[index]
    engine.close()

    engine = Engine.open(run_dir, {"budget": 41}, DeviceEvaluator(1.0, fail={best_id}))
    asyncio.run(engine.run_async())
    assert best_id not in engine.population.elite_ids()
    assert engine.store.get_program(best_id).score is None
    assert rebuild_population(engine.store, engine.task, engine.config).tables() == engine.population.tables()
    engine.close()


def test_a_fresh_run_and_a_task_without_retiming_do_not_retime(tmp_path: Path) -> None:
    engine = Engine.create(tmp_path / "a", _config(budget=20, retime_on_resume=None), DeviceEvaluator(1.0))
    asyncio.run(engine.run_async())
    engine.close()
    evaluator = DeviceEvaluator(0.5)
    engine = Engine.open(tmp_path / "a", {"budget": 25}, evaluator)  # a CPU task: retime only when asked
    asyncio.run(engine.run_async())
    assert engine.store.count_events("retimed") == 0 and len(evaluator.calls) == 5
    engine.close()
