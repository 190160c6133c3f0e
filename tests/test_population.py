"""The population on real pyribs archives, faiss and scikit-learn: cells, novelty, sampling, islands."""

from __future__ import annotations

import calendar
import colorsys
import difflib
import fractions
import heapq
import inspect
import json
import statistics
import textwrap

import numpy as np
import pytest

from evo.embed import NgramEmbedder
from evo.errors import EvoError
from evo.population import (
    IMPROVE,
    NEW,
    REJECTED,
    CVTCells,
    EmbeddingCellSpace,
    GridCells,
    NoveltyArchive,
    Population,
    SamplingConfig,
    sample_inspirations,
    sample_parents,
)
from evo.task import DescriptorSpec

SPECS = [DescriptorSpec("x", 0.0, 1.0, 10), DescriptorSpec("y", -1.0, 1.0, 4)]
FUNCTIONS = [
    textwrap.TextWrapper._wrap_chunks,
    heapq.merge,
    statistics.median_grouped,
    difflib.SequenceMatcher.find_longest_match,
    fractions.Fraction.limit_denominator,
    colorsys.rgb_to_hls,
    calendar.Calendar.itermonthdays,
]
PROGRAMS = [textwrap.dedent(inspect.getsource(f)) for f in FUNCTIONS]


def mutants(source: str, n: int) -> list[str]:
    """Small real edits: change the i-th digit found in the program."""
    digits = [i for i, ch in enumerate(source) if ch.isdigit()]
    return [source[:i] + str((int(source[i]) + 3) % 10) + source[i + 1 :] for i in digits[:n]]


# -- grid cells ------------------------------------------------------------------------


def test_grid_cell_indices_at_boundaries_and_clipping():
    g = GridCells(SPECS)
    assert g.num_cells == 40
    cell = lambda x, y: g.decide("p", 0.0, [x, y]).cell  # noqa: E731
    assert cell(0.0, -1.0) == 0
    assert cell(0.0999, -1.0) == 0 and cell(0.1, -1.0) == 4  # a boundary belongs to the upper bin
    assert cell(0.0, -0.5) == 1 and cell(0.0, 0.0) == 2
    assert cell(1.0, 1.0) == 39  # the upper edge belongs to the last bin
    assert cell(-5.0, 7.0) == 3  # clipped into the edge cells
    assert cell(1e12, -1e12) == 36  # huge values clip too
    # Same cells as ribs' own index_of on in-range points, bin edges included.
    rng = np.random.default_rng(0)
    pts = np.concatenate(
        [
            rng.uniform([0, -1], [1, 1], (500, 2)),
            np.stack(np.meshgrid(np.linspace(0, 1, 11), np.linspace(-1, 1, 5)), -1).reshape(-1, 2),
        ]
    )
    ours = [g.decide("p", 0.0, p).cell for p in pts]
    assert ours == g.archive.index_of(pts).tolist()
    # The table keeps descriptors as given, not clipped.
    g.add("far", 1.0, [-5.0, 7.0])
    assert g.table() == [{"cell": 3, "program_id": "far", "score": 1.0, "descriptors": [-5.0, 7.0]}]


def test_decide_is_pure_and_agrees_with_add():
    g = GridCells(SPECS)
    rng = np.random.default_rng(1)
    for i in range(300):
        desc = rng.uniform([-0.2, -1.2], [1.2, 1.2]).tolist()
        score = float(rng.integers(0, 20))
        before = (g.table(), g.best(), g.qd_score, g.coverage, g.elite_ids())
        verdict = g.decide(f"p{i}", score, desc)
        assert (g.table(), g.best(), g.qd_score, g.coverage, g.elite_ids()) == before
        assert g.add(f"p{i}", score, desc) == verdict


def test_strict_improvement():
    g = GridCells(SPECS)
    assert g.add("a", 1.0, [0.5, 0.5]).status == NEW
    tie = g.add("b", 1.0, [0.51, 0.5])
    assert (tie.status, tie.previous, tie.previous_score) == (REJECTED, "a", 1.0)
    assert g.elite_score("a") == 1.0 and g.elite_score("b") is None
    better = g.add("c", 1.5, [0.52, 0.6])
    assert (better.status, better.cell, better.previous, better.previous_score) == (
        IMPROVE,
        tie.cell,
        "a",
        1.0,
    )
    assert g.elite_ids() == ["c"] and g.elite_score("a") is None


def test_statistics_on_a_hand_computed_example():
    g = GridCells([DescriptorSpec("x", 0, 2, 2), DescriptorSpec("y", 0, 2, 2)], qd_offset=1.0)
    assert (
        g.best() is None
        and g.coverage == 0.0
        and g.qd_score == 0.0
        and g.sample_elite_ids(3, np.random.default_rng()) == []
    )
    g.add("a", 3.0, [0.5, 0.5])  # cell 0
    g.add("b", 5.0, [1.5, 0.5])  # cell 2
    g.add("c", 4.0, [0.2, 0.9])  # replaces a in cell 0
    g.add("d", 2.0, [1.9, 1.9])  # cell 3
    g.add("e", 1.0, [1.9, 1.9])  # rejected
    assert g.num_elites == 3 and g.coverage == 0.75
    assert g.qd_score == pytest.approx((4 - 1) + (5 - 1) + (2 - 1))
    assert g.best() == ("b", 5.0)
    assert g.top(2) == [("b", 5.0), ("c", 4.0)]
    assert [(r["cell"], r["program_id"], r["score"]) for r in g.table()] == [
        (0, "c", 4.0),
        (2, "b", 5.0),
        (3, "d", 2.0),
    ]
    assert g.archive.stats.qd_score == pytest.approx(g.qd_score)  # ribs agrees once flushed


def test_single_cell_and_input_errors():
    for g in (GridCells.single(), GridCells([])):
        assert g.num_cells == 1
        assert g.add("a", 1.0, []).status == NEW and g.add("b", 2.0, ()).status == IMPROVE
        assert g.best() == ("b", 2.0)
    g = GridCells(SPECS)
    with pytest.raises(ValueError, match="expects 2 descriptor"):
        g.add("a", 1.0, [0.5])
    with pytest.raises(ValueError, match="finite"):
        g.add("a", float("nan"), [0.5, 0.5])
    with pytest.raises(ValueError, match="finite"):
        g.decide("a", 1.0, [0.5, float("inf")])


def test_top_and_sampling_track_replacements():
    g = GridCells([DescriptorSpec("x", 0, 1, 50)])
    rng = np.random.default_rng(2)
    for i in range(2000):
        g.add(f"p{i}", float(rng.normal()), [float(rng.random())])
    by_score = sorted(((g.elite_score(p), p) for p in g.elite_ids()), reverse=True)
    assert g.top(5) == [(p, s) for s, p in by_score[:5]]
    assert g.best() == (by_score[0][1], by_score[0][0])
    picks = g.sample_elite_ids(5000, rng)
    assert set(picks) == set(g.elite_ids())  # uniform over 50 cells: all show up


def test_cvt_cells_from_embedding_space_round_trip():
    embedder = NgramEmbedder()
    fit_texts = PROGRAMS[:4] + [m for p in PROGRAMS[:4] for m in mutants(p, 2)]
    space = EmbeddingCellSpace.fit(embedder.embed(fit_texts), n_dims=2, n_cells=16, seed=0)
    assert space.n_dims == 2 and space.centroids.shape == (16, 2)
    restored = EmbeddingCellSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert restored.to_dict() == space.to_dict()
    refit = EmbeddingCellSpace.fit(embedder.embed(fit_texts), n_dims=2, n_cells=16, seed=0)
    np.testing.assert_array_equal(refit.centroids, space.centroids)  # seeded: the same cells

    texts = PROGRAMS + [m for p in PROGRAMS for m in mutants(p, 3)]
    vectors = embedder.embed(texts)
    a, b = CVTCells(space.centroids), CVTCells(restored.centroids)
    da, db = space.project(vectors), restored.project(vectors)
    np.testing.assert_array_equal(da, db)
    cells_a = [a.decide(f"p{i}", 0.0, d).cell for i, d in enumerate(da)]
    assert cells_a == [b.decide(f"p{i}", 0.0, d).cell for i, d in enumerate(db)]
    assert cells_a == a.archive.index_of(da).tolist()  # nearest centroid, as ribs finds it
    assert len(set(cells_a)) > 1
    for i, d in enumerate(da):
        a.add(f"p{i}", float(i), d)
    assert a.num_elites == len(set(cells_a))


def test_embedding_space_with_few_samples():
    v = NgramEmbedder().embed(PROGRAMS[:2])
    space = EmbeddingCellSpace.fit(v, n_dims=2, n_cells=8)
    assert space.n_dims == 1  # two samples span one direction
    assert space.project(v).shape == (2, 1)
    with pytest.raises(EvoError, match="at least 2 distinct"):
        EmbeddingCellSpace.fit(np.repeat(v[:1], 3, axis=0))
    with pytest.raises(ValueError, match="shape"):
        space.project(np.zeros((1, 7)))


# -- novelty -----------------------------------------------------------------------------


def test_novelty_near_duplicates_and_ordering():
    embedder = NgramEmbedder()
    stored = embedder.embed(PROGRAMS[:-1])
    archive = NoveltyArchive(embedder.dim, k=3)
    assert archive.novelty(stored[0]) == 1.0 and archive.is_near_duplicate(stored[0]) == (False, None, 0.0)
    archive.add("p0", stored[0])
    archive.add_batch([f"p{i}" for i in range(1, len(stored))], stored[1:])
    assert len(archive) == len(stored) and archive.ids() == [f"p{i}" for i in range(len(stored))]

    one_literal = embedder.embed(mutants(PROGRAMS[3], 1))[0]
    dup, nearest_id, sim = archive.is_near_duplicate(one_literal)
    assert dup and nearest_id == "p3" and sim >= 0.995
    unrelated = embedder.embed(PROGRAMS[-1:])[0]
    dup, _, sim = archive.is_near_duplicate(unrelated)
    assert not dup and sim < 0.6

    near = archive.nearest(one_literal, 3)
    assert near[0][0] == "p3" and [s for _, s in near] == sorted((s for _, s in near), reverse=True)
    assert archive.novelty(one_literal) < archive.novelty(unrelated)
    assert archive.nearest(stored[0], 100)[0] == ("p0", pytest.approx(1.0, abs=1e-5))
    assert len(archive.nearest(stored[0], 100)) == len(stored)
    with pytest.raises(ValueError, match="dimension 256"):
        archive.add("bad", np.ones(3))



def test_novelty_assessment_is_added_as_the_vector_itself():
    """`assess` agrees with `novelty` and `nearest`, and `add_assessed` stores what `add` would (the
    vector normalised once)."""
    embedder = NgramEmbedder()
    vectors = embedder.embed(PROGRAMS) * 3.0  # not unit length: both ways normalise
    by_add, by_assessment = NoveltyArchive(embedder.dim, k=3), NoveltyArchive(embedder.dim, k=3)
    for i, v in enumerate(vectors):
        seen = by_assessment.assess(v)
        assert seen.novelty == by_add.novelty(v)
        assert (seen.nearest, seen.similarity) == (by_add.nearest(v, 1) or [(None, 0.0)])[0]
        by_add.add(f"p{i}", v)
        by_assessment.add_assessed(f"p{i}", seen)
    probe = embedder.embed(mutants(PROGRAMS[2], 1))[0]
    assert by_assessment.nearest(probe, 5) == by_add.nearest(probe, 5)
    from evo.population.novelty import NoveltyAssessment

    with pytest.raises(ValueError, match="one vector"):
        by_assessment.add_assessed("bad", NoveltyAssessment(1.0, False, None, 0.0))


# -- sampling ----------------------------------------------------------------------------


def test_sampling_config_validation():
    with pytest.raises(ValueError, match="exceeds 1; lower one"):
        SamplingConfig(exploit_ratio=0.9, explore_ratio=0.2)
    with pytest.raises(ValueError, match="exploit_ratio must be in"):
        SamplingConfig(exploit_ratio=-0.1)
    with pytest.raises(ValueError, match="tournament_size"):
        SamplingConfig(tournament_size=0)
    assert SamplingConfig().frontier_ratio == pytest.approx(0.1)


def ranked_cells(n: int = 100) -> GridCells:
    g = GridCells([DescriptorSpec("x", 0, n, n)])
    for i in range(n):
        g.add(f"p{i}", float(i), [i + 0.5])
    return g


def test_exploit_prefers_better_elites():
    g = ranked_cells()
    rng = np.random.default_rng(3)
    mean_score = lambda cfg: np.mean([g.elite_score(p) for p in sample_parents(g, 2000, rng, cfg)])  # noqa: E731
    exploit = mean_score(SamplingConfig(exploit_ratio=1.0, explore_ratio=0.0))
    explore = mean_score(SamplingConfig(exploit_ratio=0.0, explore_ratio=1.0))
    assert explore == pytest.approx(49.5, abs=3)  # uniform over the cells
    assert exploit > 75  # best of 4 uniform draws: expected ~79
    # Frontier parents are among the most recent admissions.
    frontier = sample_parents(
        g, 200, rng, SamplingConfig(exploit_ratio=0.0, explore_ratio=0.0, frontier_size=5)
    )
    assert set(frontier) <= {f"p{i}" for i in range(95, 100)}
    assert sample_parents(GridCells(SPECS), 3, rng, SamplingConfig()) == []


def test_inspirations_exclude_the_parent():
    g = ranked_cells()
    rng = np.random.default_rng(4)
    config = SamplingConfig(n_inspirations=3)
    for _ in range(200):
        (parent,) = sample_parents(g, 1, rng, config)
        insp = sample_inspirations(g, {parent}, rng, config)
        assert len(insp) == 3 and len(set(insp)) == 3 and parent not in insp
    small = ranked_cells(3)  # p0, p1, p2
    insp = sample_inspirations(small, {"p2"}, rng, config)
    assert insp[0] == "p1" and sorted(insp) == ["p0", "p1"]


# -- islands ---------------------------------------------------------------------------


def test_migration_happens_at_the_right_count():
    pop = Population(GridCells.single, n_islands=3, migration_interval=5, migrants=1)
    calls = [("a", 0, 1.0), ("b", 1, 2.0), ("c", 2, 3.0), ("d", 0, 0.5)]
    for pid, island, score in calls:
        pop.admit(pid, island, score, [])
        assert pop.last_migrations == []
    assert pop.admit("e", 1, 0.1, []).status == REJECTED  # the 5th call migrates
    # a(1.0) loses to b(2.0) on island 1, b loses to c(3.0) on island 2, c beats a on island 0.
    assert pop.last_migrations == [("c", 2, 0)]
    assert [c.elite_ids() for c in pop.islands] == [["c"], ["b"], ["c"]]
    assert pop.num_elites == 2 and pop.elite_info("a") is None and pop.elite_info("c") == (3.0, ())
    assert pop.best() == ("c", 3.0) and pop.qd_score == 8.0 and pop.coverage == 1.0
    pop.admit("f", 0, 0.0, [])
    assert pop.last_migrations == []


def make_pop() -> Population:
    return Population(lambda: GridCells(SPECS), n_islands=3, migration_interval=7, migrants=2)


def test_replaying_admits_rebuilds_the_same_population():
    rng = np.random.default_rng(5)
    live = make_pop()
    calls, migrations = [], 0
    for i in range(600):
        call = (
            f"p{i}",
            int(rng.integers(3)),
            float(rng.normal() + i / 100),
            rng.uniform([0, -1], [1, 1]).tolist(),
        )
        assert live.decide(*call) == live.islands[call[1]].decide(call[0], call[2], call[3])
        live.admit(*call)
        calls.append(call)
        migrations += len(live.last_migrations)
    assert migrations > 0
    replayed = make_pop()
    for call in calls:
        replayed.admit(*call)
    assert replayed.tables() == live.tables()
    for a, b in zip(live.islands, replayed.islands, strict=True):
        assert a.elite_ids() == b.elite_ids() and a.best() == b.best() and a.top(5) == b.top(5)
    assert (replayed.best(), replayed.num_elites, replayed.qd_score, replayed.coverage) == (
        live.best(),
        live.num_elites,
        live.qd_score,
        live.coverage,
    )


def test_population_sample_borrows_and_validates():
    pop = make_pop()
    rng = np.random.default_rng(6)
    assert pop.sample(0, rng) == ([], [])
    for i in range(6):
        pop.admit(f"p{i}", 2, float(i), [i / 6, 0.0])
    parents, insp = pop.sample(0, rng, n_parents=2)  # island 0 is empty: borrows from island 2
    assert len(parents) == 2 and set(parents) <= {f"p{i}" for i in range(6)}
    assert insp and not set(insp) & set(parents)
    with pytest.raises(ValueError, match="islands 0..2"):
        pop.admit("x", 3, 1.0, [0.5, 0.5])
    cells = GridCells(SPECS)
    with pytest.raises(ValueError, match="lambda: cells"):
        Population(lambda: cells, n_islands=2)


def test_migration_survives_a_migrant_displaced_earlier_in_the_same_round() -> None:
    """Regression: island 0's migrant can evict island 1's own migrant from its only cell."""
    from evo.population import GridCells, Population
    from evo.task import DescriptorSpec

    specs = [DescriptorSpec("x", 0.0, 1.0, 1)]
    pop = Population(lambda: GridCells(specs), n_islands=2, migration_interval=2, migrants=1)
    pop.admit("weak", 1, 1.0, [0.5])
    pop.admit("strong", 0, 2.0, [0.5])  # migration: strong -> island 1 evicts weak, weak -> island 0
    assert pop.islands[1].elite_ids() == ["strong"]
    assert ("strong", 0, 1) in pop.last_migrations


def test_noisy_scores_must_beat_the_elite_by_the_margin() -> None:
    from evo.population.grid import IMPROVE, REJECTED, GridCells
    from evo.task import DescriptorSpec

    cells = GridCells([DescriptorSpec("x", 0.0, 1.0, 4)], min_improvement=0.02)
    cells.add("elite", 0.50, [0.1])
    assert cells.decide("within_noise", 0.505, [0.1]).status == REJECTED  # +1%: inside the timing noise
    assert cells.decide("clear_win", 0.515, [0.1]).status == IMPROVE  # +3%
    exact = GridCells([DescriptorSpec("x", 0.0, 1.0, 4)])
    exact.add("elite", 0.50, [0.1])
    assert exact.decide("any_win", 0.5001, [0.1]).status == IMPROVE
