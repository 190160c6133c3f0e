"""Scale: the hot path does not grow with the store; the batch insert and the IVF regime behave.

The complexity guard fills a real store to 10k and then 100k programs (the benchmark's filler,
low-rank embeddings for speed) and checks that sampling and admitting at 100k cost at most
3x what they cost at 10k, and that none of the SQL they run scans a table. Absolute timings
live in benchmarks/population_scale.py and BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from evo.population.novelty import IndexConfig, NoveltyArchive
from evo.program import Program, Status
from evo.store import Store

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "population_scale.py"


def _bench():
    spec = importlib.util.spec_from_file_location("population_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["population_scale"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 26 s: a 100,000-program store built twice (benchmarks/population_scale.py measures it)
@pytest.mark.timeout(300)
def test_sample_and_admit_at_100k_cost_at_most_3x_of_10k(tmp_path: Path) -> None:
    bench = _bench()
    run_dir = tmp_path / "run"
    bench.new_run(run_dir)
    held, _ = bench.fill(run_dir, 0, 10_000, "lowrank", workers=2, held=None)
    used, held = held.split(600)
    small = bench.measure(run_dir, used, samples=400, admits=300, queries=300, recall_queries=0)
    held, _ = bench.fill(run_dir, 10_000, 100_000, "lowrank", workers=2, held=held)
    used, _ = held.split(600)
    large = bench.measure(run_dir, used, samples=400, admits=300, queries=300, recall_queries=0)
    assert large["programs"] > 100_000 and large["novelty_index"].startswith("ivf")
    for key in ("sample_p50_ms", "admit_p50_ms"):
        assert large[key] <= 3 * small[key], (key, small[key], large[key])
    assert small["table_scans"] == [] and large["table_scans"] == []


def test_add_programs_is_what_single_inserts_leave(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path / "run")
    ok = Program(source="x = 1\n", operator="constants", island=1, status=Status.EVALUATED, score=2.5,
                 metrics={"m": 2.5}, descriptors=(0.1, 0.2))
    failed = Program(source={"candidate.py": "y = 2\n", "util.py": "z = 3\n"}, parents=(ok.id,),
                     status=Status.FAILED, error="boom")
    proposed = Program(source="w = 4\n", parents=(ok.id,))
    rejected = Program(source="v = 5\n", status=Status.REJECTED, error="near duplicate")
    vectors = [np.ones(4), np.zeros(4), np.full(4, 0.5), None]
    store.add_programs([ok, failed, proposed, rejected], vectors)
    assert [p.seq for p in (ok, failed, proposed, rejected)] == [1, 2, 3, 4]
    assert [r.program_id for r in store.iter_evaluations()] == [ok.id, failed.id]
    back = store.get_program(failed.id)
    assert back.source == failed.source and back.parents == (ok.id,) and back.status == Status.FAILED
    assert store.get_program(ok.id).descriptors == (0.1, 0.2)
    assert [p.id for p in store.pending_programs()] == [proposed.id]
    assert store.event_counts() == {"proposed": 3, "evaluated": 2, "rejected": 1}
    ids, mat = next(store.iter_embeddings(4))
    assert ids == [ok.id, failed.id, proposed.id] and mat[2].tolist() == [0.5] * 4
    assert [p.id for p in store.best_programs(5)] == [ok.id]
    plan = " ".join(r[-1] for r in store.db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM programs WHERE status = 'evaluated' AND score IS NOT NULL"
        " ORDER BY score DESC, seq LIMIT 10"))
    assert "programs_best" in plan  # resume reads the best programs without sorting the table
    with pytest.raises(ValueError, match="2 programs but 1 embeddings"):
        store.add_programs([Program(source="a"), Program(source="b")], [None])
    store.close()


def _families(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Clustered unit vectors: families of relatives around random centres."""
    centres = rng.standard_normal((n // 50, dim))
    x = centres[rng.integers(len(centres), size=n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("background", [False, True])
def test_novelty_switches_from_exact_to_ivf_and_keeps_finding_neighbours(background: bool) -> None:
    rng = np.random.default_rng(0)
    x = _families(12_000, 32, rng)
    archive = NoveltyArchive(32, k=10, index=IndexConfig(exact_max=2_000, background=background))
    archive.add_batch([f"p{i}" for i in range(1_500)], x[:1_500])
    assert archive.kind == "exact"
    archive.add_batch([f"p{i}" for i in range(1_500, 10_000)], x[1_500:10_000])
    for i in range(10_000, 11_000):  # one at a time, as the engine adds, while a build may run
        archive.add(f"p{i}", x[i])
    archive.wait()
    assert archive.kind.startswith("ivf") and not archive.building
    assert len(archive) == 11_000 and archive.ids()[10_500] == "p10500"
    queries = x[11_000:11_100]
    recall = np.mean([
        len({p for p, _ in archive.nearest(q, 10)} & {p for p, _ in archive.exact_nearest(q, 10)}) / 10
        for q in queries
    ])
    assert recall >= 0.9
    dup, nearest, sim = archive.is_near_duplicate(x[10_700])  # a stored vector: its own duplicate
    assert dup and nearest == "p10700" and sim == pytest.approx(1.0, abs=1e-5)
    near = archive.nearest(queries[0], 10)
    assert [s for _, s in near] == sorted((s for _, s in near), reverse=True)


def test_novelty_rows_in_growing_blocks_and_a_bulk_load_builds_without_the_caller(monkeypatch) -> None:
    import evo.population.novelty as novelty

    monkeypatch.setattr(novelty, "BLOCK_ROWS", 256)  # blocks of 256, 512, 1024, ... rows
    rng = np.random.default_rng(1)
    x = _families(9_000, 16, rng)
    archive = NoveltyArchive(16, k=5, index=IndexConfig(exact_max=1_000))
    for lo in range(0, 8_000, 500):  # a bulk load, as resume does it
        archive.add_batch([f"p{i}" for i in range(lo, lo + 500)], x[lo : lo + 500])
    rows = archive._rows
    assert [len(b) for b in rows.blocks] == [256, 512, 1024, 2048, 4096, 8192]
    picked = rng.choice(8_000, size=300, replace=False)
    assert np.array_equal(rows.take(picked, rows.blocks), x[picked])
    assert np.allclose(rows.dots(x[8_500], picked), x[picked] @ x[8_500], atol=1e-6)
    assert [s for s, _ in rows.spans(100, 2_000)] == [100, 256, 768, 1_792]
    while archive.building:  # the builder alone catches up with the bulk load: no call from here
        archive._build.result(timeout=120)
    assert 2 * archive._index.trained_on > len(archive)
    archive.wait()
    assert archive.kind.startswith("ivf") and archive.kind.endswith("pq8x4fs")
    queries = x[8_000:8_100]
    exact = [{p for p, _ in archive.exact_nearest(q, 5)} for q in queries]
    brute = [{f"p{i}" for i in np.argsort(-(x[:8_000] @ q), kind="stable")[:5]} for q in queries]
    assert np.mean([len(a & b) / 5 for a, b in zip(exact, brute, strict=True)]) >= 0.99
    recall = np.mean([len({p for p, _ in archive.nearest(q, 5)} & e) / 5 for q, e in zip(queries, exact, strict=True)])
    assert recall >= 0.9


def test_novelty_index_on_an_odd_dimension_and_its_config() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3_000, 7)).astype(np.float32)
    archive = NoveltyArchive(7, k=3, index=IndexConfig(exact_max=1_000, background=False))
    archive.add_batch([f"p{i}" for i in range(3_000)], x)
    assert archive.kind == "ivf64,pca6,pq3x4fs"
    assert archive.nearest(x[1_234], 1)[0][0] == "p1234"
    config = IndexConfig()
    assert config.nprobe_for(1_024) == 112 and config.nprobe_for(16) == 14
    assert config.candidates_for(10, 10_000) == 200 and config.candidates_for(10, 1_000_000) == 500
    assert config.candidates_for(50, 1_000_000) == 500 and config.candidates_for(10, 3) == 3
    with pytest.raises(ValueError, match="probe_per_sqrt"):
        IndexConfig(probe_per_sqrt=0)
