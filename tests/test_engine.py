"""The engine end to end, on real sandboxed evaluations and a real SQLite store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from evo.config import RunConfig
from evo.engine import Engine, rebuild_population
from evo.program import Program, Status
from evo.store import Store

TOY = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")


def _toy_config(**kw: object) -> RunConfig:
    base = dict(task=TOY, budget=40, workers=2, islands=2, migration_interval=7, seed=1)
    base.update(kw)
    return RunConfig.from_dict(base)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Engine]:
    """One finished run of the toy task, whose seeds hang, crash, fork-bomb, flood, ..."""
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    engine = Engine.create(run_dir, _toy_config())
    asyncio.run(engine.run_async())
    return run_dir, engine


def test_faults_of_candidates_cost_only_those_candidates(toy_run: tuple[Path, Engine]) -> None:
    run_dir, engine = toy_run
    store = engine.store
    assert store.count_evaluations() == 40
    by_seed = {p.meta.get("seed_file"): p for p in store.iter_programs() if p.operator == "seed"}
    expected = {
        "hang.py": "timeout",
        "segfault.py": "crashed",
        "memory.py": "memory",
        "print_gigabyte.py": "output_limit",
        "syntax_error.py": "audit",  # the sandboxed child audits before it imports: the verdict names the line
    }
    for seed_file, kind in expected.items():
        p = by_seed[seed_file]
        assert p.status == Status.FAILED, seed_file
        events = [d for _, _, k, pid, d in store.events("evaluated") if pid == p.id]
        assert events and events[0]["reason_kind"] == kind, (seed_file, events)
    # The fork bomb and the parent killer fail (or finish) without taking the run down.
    assert by_seed["fork_bomb.py"].status == Status.FAILED
    assert by_seed["kill_parent.py"].status in (Status.FAILED, Status.EVALUATED)
    # The writer outside its directory reached neither the store nor the run's parent.
    assert not (run_dir.parent / "escaped.txt").exists()
    assert not (Path.home() / "escaped.txt").exists()
    with sqlite3.connect(run_dir / "evo.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # And the search went on from the good seed.
    assert engine.population.best() is not None


def test_archive_rebuilt_from_store_equals_live_archive(toy_run: tuple[Path, Engine]) -> None:
    _, engine = toy_run
    rebuilt = rebuild_population(engine.store, engine.task, engine.config)
    assert rebuilt.tables() == engine.population.tables()
    assert rebuilt.best() == engine.population.best()
    assert rebuilt.admissions == engine.population.admissions


def test_store_logs_every_proposal_evaluation_and_admission(toy_run: tuple[Path, Engine]) -> None:
    _, engine = toy_run
    store = engine.store
    counts = store.event_counts()
    programs = list(store.iter_programs())
    statuses = Counter(p.status for p in programs)
    assert counts["evaluated"] == 40 == statuses[Status.EVALUATED] + statuses[Status.FAILED]
    assert counts["proposed"] == 40 + statuses[Status.PROPOSED]
    assert counts.get("rejected", 0) == statuses[Status.REJECTED]
    assert counts["admitted"] >= 1
    assert counts["operator_call"] == counts["proposed"] - 9 + counts.get("rejected", 0)  # 9 seeds need no call
    assert len({p.id for p in programs}) == len(programs)


def test_near_duplicates_are_rejected_before_evaluation(tmp_path: Path) -> None:
    engine = Engine.create(tmp_path / "run", _toy_config(budget=9))
    asyncio.run(engine.run_async())
    seed = next(p for p in engine.store.iter_programs() if p.meta.get("seed_file") == "a_good.py")
    reformatted = seed.text.replace(" = ", " =  ").replace("\n\n", "\n\n\n")
    before = engine.store.count_evaluations()
    child = Program(source=reformatted, parents=(seed.id,), operator="test")
    assert not engine._screen(child, {"operator": "test"})
    assert engine.store.get_program(child.id).status == Status.REJECTED
    assert "cosine" in (engine.store.get_program(child.id).error or "")
    different = Program(source=seed.text.replace("0.9, -0.2", "0.31, 0.29"), parents=(seed.id,), operator="test")
    assert engine._screen(different, {"operator": "test"})
    stored = engine.store.get_program(different.id)
    assert stored.status == Status.PROPOSED
    assert 0.0 < stored.meta["novelty"] < 1.0  # k-NN novelty recorded with the proposal
    assert engine.store.count_evaluations() == before
    engine.close()


def test_embedding_cells_are_frozen_and_survive_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    engine = Engine.create(run_dir, _toy_config(budget=15, cells="embedding", embedding_cells=16))
    asyncio.run(engine.run_async())
    space = engine.store.get_meta("cell_space")
    tables = engine.population.tables()
    engine.close()
    reopened = Engine.open(run_dir, {"budget": 20})
    assert reopened.store.get_meta("cell_space") == space
    assert reopened.population.tables() == tables
    asyncio.run(reopened.run_async())
    assert reopened.store.count_evaluations() == 20
    reopened.close()


def test_resume_of_a_finished_run_with_a_bigger_budget(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    engine = Engine.create(run_dir, _toy_config(budget=12))
    asyncio.run(engine.run_async())
    engine.close()
    again = Engine.open(run_dir)
    asyncio.run(again.run_async())
    assert again.store.count_evaluations() == 12  # nothing to do: budget already spent
    again.close()
    more = Engine.open(run_dir, {"budget": 20})
    asyncio.run(more.run_async())
    store = Store.in_dir(run_dir, readonly=True)
    assert store.count_evaluations() == 20
    more.close()
