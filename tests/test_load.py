"""`evo.load`: a real run (tests/report_run.py) read back as DataFrames, checked against the store itself;
a minimised run in the task's own values; reads of a run while `evo run` writes it."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from report_run import BUDGET, ReportRun, make_report_run

pytest.importorskip("pandas")

import evo  # noqa: E402
from evo.config import RunConfig  # noqa: E402
from evo.errors import EvoError  # noqa: E402
from evo.program import Status  # noqa: E402
from evo.replay import new_population, rebuild_population  # noqa: E402
from evo.report import metrics  # noqa: E402
from evo.report.load import Run  # noqa: E402
from evo.store import Store  # noqa: E402
from evo.task import load_task  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    return make_report_run(tmp_path_factory)


@pytest.fixture(scope="module")
def run(made: ReportRun) -> Run:
    return evo.load(made.run_dir)


@pytest.fixture(scope="module")
def stored(made: ReportRun) -> dict:
    """The run as the store's own API reads it: the reference the frames are checked against."""
    store = Store.in_dir(made.run_dir, readonly=True)
    try:
        return {
            "programs": {p.id: p for p in store.iter_programs()},
            "evaluations": [rec.program_id for rec in store.iter_evaluations()],
            "admitted": [pid for _s, _t, _k, pid, _d in store.events("admitted")],
            "calls": [(pid, d) for _s, _t, _k, pid, d in store.events("operator_call")],
            "embeddings": [(ids, m) for ids, m in store.iter_embeddings(256)],
        }
    finally:
        store.close()


def test_programs_have_one_float_column_per_metric_and_descriptor(run: Run, stored: dict) -> None:
    df = run.programs()
    for col in ("value", "metric_sum_radii", "metric_radius_std", "descriptor_radius_std",
                "descriptor_boundary_fraction", "novelty"):
        assert df[col].dtype == "float64", (col, df[col].dtype)
    assert "source" not in df.columns and "score" not in df.columns  # source on demand; no internal score
    assert df["id"].tolist() == list(stored["programs"])  # every program, in proposal order
    for row in df.itertuples():
        p = stored["programs"][row.id]
        assert row.status == str(p.status) and row.operator == p.operator
        if p.status == Status.EVALUATED:
            assert row.value == p.metrics["sum_radii"] == row.metric_sum_radii
            assert (row.descriptor_radius_std, row.descriptor_boundary_fraction) == p.descriptors
    chosen = run.programs(["id", "source", "parents", "eval_order"], status="evaluated")
    assert list(chosen.columns) == ["id", "parents", "eval_order", "source"]
    some = chosen.iloc[-1]
    assert some.source == stored["programs"][some.id].text
    assert some.parents == list(stored["programs"][some.id].parents)
    assert some.eval_order == stored["evaluations"].index(some.id) + 1
    chunks = list(run.iter_programs(["id"], chunksize=7))
    assert [len(c) for c in chunks[:-1]] == [7] * (len(chunks) - 1) and sum(map(len, chunks)) == len(df)


def test_an_unknown_column_is_refused_naming_the_known_ones(run: Run) -> None:
    with pytest.raises(EvoError, match="unknown program column 'metric'; known: .*metric_sum_radii"):
        run.programs(["id", "metric"])


def test_evaluations_are_in_commit_order_with_their_failures(run: Run, stored: dict) -> None:
    ev = run.evaluations(metrics=True, descriptors=True)
    assert len(ev) == BUDGET == run.n_evaluations
    assert ev["n"].tolist() == list(range(1, BUDGET + 1))
    assert ev["program_id"].tolist() == stored["evaluations"]
    assert ev["time"].is_monotonic_increasing
    for row in ev.itertuples():
        p = stored["programs"][row.program_id]
        assert row.ok == (p.status == Status.EVALUATED)
        if row.ok:
            assert row.value == p.metrics["sum_radii"] == row.metric_sum_radii
            assert row.admission in ("new", "improve", "rejected")
    audit = ev[ev["failure"] == "audit"]
    assert len(audit) == 1 and "ctypes" in audit["reason"].iloc[0]  # the banned seed, refused by the screen
    assert audit["operator"].iloc[0] == "seed"


def test_admissions_are_the_admitted_events_with_values(run: Run, stored: dict) -> None:
    adm = run.admissions()
    assert adm["program_id"].tolist() == stored["admitted"] and len(adm) > 0
    order = {pid: i + 1 for i, pid in enumerate(stored["evaluations"])}
    for row in adm.itertuples():
        assert row.n == order[row.program_id]
        assert row.value == stored["programs"][row.program_id].metrics["sum_radii"]
        assert row.status in ("new", "improve")
        if row.status == "improve":  # a maximised task: the newcomer beat the incumbent it replaced
            assert row.value > row.previous_value
            assert row.previous_value == stored["programs"][row.previous].metrics["sum_radii"]
        else:
            assert np.isnan(row.previous_value)


def test_operator_calls_merge_the_events_of_one_call(run: Run, stored: dict) -> None:
    calls = run.operator_calls()
    made = [pid for ids in calls.loc[calls["ok"], "program_ids"] for pid in ids]
    assert made == [pid for pid, _ in stored["calls"]]  # every child once, in order
    assert (calls.loc[calls["ok"], "children"] == calls.loc[calls["ok"], "program_ids"].map(len)).all()
    for row in calls[calls["ok"]].itertuples():
        for pid in row.program_ids:
            assert stored["programs"][pid].operator == row.operator
            assert list(stored["programs"][pid].parents) == row.parents
    assert calls["completion_tokens"].isna().all()  # no LLM in this run: no tokens, not zeros
    failed = calls[~calls["ok"]]
    assert (failed["children"] == 0).all() and failed["failure"].notna().all()


def test_verdicts_carry_the_auditors_reasons(run: Run, stored: dict) -> None:
    verdicts = run.verdicts()
    evaluated = {pid for pid, p in stored["programs"].items() if p.status in (Status.EVALUATED, Status.FAILED)}
    assert set(verdicts["program_id"]) <= evaluated
    failed = verdicts[verdicts["verdict"] == "fail"]
    assert len(failed) == 1 and any(r.startswith("ctypes:") for r in failed["reasons"].iloc[0])
    assert (verdicts.loc[verdicts["verdict"] == "pass", "reasons"].map(len) == 0).all()
    reasons = run.audit_reasons()
    assert reasons["check"].tolist() == ["ctypes"] and reasons["program_id"].iloc[0] == failed["program_id"].iloc[0]


def test_lineage_edges_match_the_programs_parents(run: Run, stored: dict) -> None:
    edges = run.lineage()
    expected = [(parent, pid, i) for pid, p in stored["programs"].items() for i, parent in enumerate(p.parents)]
    assert list(zip(edges["parent"], edges["child"], edges["parent_index"], strict=True)) == expected
    assert (edges["operator"] == [stored["programs"][c].operator for c in edges["child"]]).all()
    best = run.best(1, ["id", "value"])
    anc = run.ancestry(best["id"].iloc[0])
    nodes = set(anc.attrs["nodes"]["program_id"])
    assert best["id"].iloc[0] in nodes and any(stored["programs"][n].operator == "seed" for n in nodes)


def test_embeddings_are_the_stored_vectors(run: Run, stored: dict) -> None:
    emb = run.embeddings()
    ids = [i for ids, _ in stored["embeddings"] for i in ids]
    mat = np.concatenate([m for _, m in stored["embeddings"]])
    # the store's replay reads screened programs only; the loader also returns the seeds' vectors
    keep = [emb.ids.index(i) for i in ids]
    assert emb.vectors.dtype == np.float32 and emb.vectors.shape[1] == 256
    assert np.array_equal(emb.vectors[keep], mat)
    part = run.embeddings(sample=5, seed=1)
    assert len(part) == 5 == len(set(part.ids)) and set(part.ids) <= set(emb.ids)
    assert np.array_equal(part.vectors, emb.vectors[[emb.ids.index(i) for i in part.ids]])


def test_the_archive_at_any_evaluation_count_is_the_replayed_one(run: Run, made: ReportRun) -> None:
    store = Store.in_dir(made.run_dir, readonly=True)
    try:
        config = RunConfig.from_dict(store.get_meta("config"))
        task = load_task(config.task)
        assert run.archive().tables() == rebuild_population(store, task, config).tables()
        records = list(store.iter_evaluations())
    finally:
        store.close()
    prog = metrics.progress(run)
    for at in (1, 9, 25):
        expected = new_population(task, config, None)
        for rec in records[:at]:
            if rec.status == Status.EVALUATED and rec.score is not None:
                expected.admit(rec.program_id, rec.island, rec.score, rec.descriptors)
        got = run.archive(at)
        assert got.tables() == expected.tables()
        assert prog.loc[prog["n"] == at, "coverage"].item() == pytest.approx(got.coverage)
        assert prog.loc[prog["n"] == at, "qd_score"].item() == pytest.approx(got.qd_score)
    assert run.archive(9).num_elites <= run.archive(25).num_elites
    elites = run.elites()
    values = run.programs(["id", "value"]).set_index("id")["value"]
    assert (elites["value"].to_numpy() == values.loc[elites["program_id"]].to_numpy()).all()


def test_metrics_add_up_to_the_runs_events(run: Run) -> None:
    adm = run.admissions()
    by_op = metrics.admissions_by(run, "operator")
    assert by_op["admissions"].sum() == len(adm) and by_op["evaluations"].sum() == BUDGET
    assert by_op.loc["seed", "evaluations"] == 2
    by_model = metrics.admissions_by(run, "model")
    assert list(by_model.index) == ["-"]  # no LLM in this run
    fails = metrics.failure_reasons(run)
    audit = fails[(fails["stage"] == "evaluation") & (fails["kind"] == "audit")]
    assert audit["count"].tolist() == [1] and "ctypes" in audit["example"].iloc[0]
    ev = run.evaluations()
    assert fails.loc[fails["stage"] == "evaluation", "count"].sum() == (~ev["ok"]).sum()
    assert metrics.audit_rejections(run)[["check", "count"]].values.tolist() == [["ctypes", 1]]
    assert metrics.evaluations_per_minute(run).sum() == BUDGET
    prog = metrics.progress(run)
    assert prog["best_value"].dropna().is_monotonic_increasing and prog["n"].tolist() == list(range(1, BUDGET + 1))
    s = metrics.summary(run)
    assert s.best_value == ev["value"].max() == prog["best_value"].iloc[-1]
    assert s.coverage == prog["coverage"].iloc[-1] and s.evaluations == BUDGET


def test_reading_writes_nothing(made: ReportRun) -> None:
    db = made.run_dir / "evo.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with evo.load(made.run_dir) as r:
        r.programs()
        r.evaluations()
        r.archive()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.store.db.execute("DELETE FROM events")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_reads_while_the_run_was_written_were_consistent(made: ReportRun) -> None:
    reads = made.live_reads
    seen = [r["evaluations"] for r in reads]
    assert any(0 < n < BUDGET for n in seen), seen  # some reads happened mid-run
    assert seen == sorted(seen) and seen[-1] == BUDGET
    for r in reads:
        assert r["numbered_in_order"] and r["evaluated_programs_finished"] and r["admitted_were_evaluated"], r


def test_a_folder_without_a_run_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvoError, match="not an evo run directory"):
        evo.load(tmp_path)


def test_a_minimised_run_reads_in_the_tasks_own_values(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir = tmp_path_factory.mktemp("minimised") / "run"
    result = subprocess.run([sys.executable, "-m", "evo", "run", "math/min_max_distance_16", "--run-dir",
                             str(run_dir), "--budget", "10", "--islands", "1", "--quiet"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    with evo.load(run_dir) as r:
        assert r.objective == "minimize"
        progs = r.programs().set_index("id")
        ev = r.evaluations()
        ok = ev[ev["ok"]]
        assert (ok["value"] > 0).all()  # the ratio itself, not the engine's negated score
        assert (ok["value"].to_numpy() == progs.loc[ok["program_id"], "metric_ratio_squared"].to_numpy()).all()
        best = r.best(3, ["id", "value"])
        assert best["value"].is_monotonic_increasing and best["value"].iloc[0] == ok["value"].min()
        elites = r.elites()
        assert (elites["value"].to_numpy() == progs.loc[elites["program_id"], "value"].to_numpy()).all()
        prog = metrics.progress(r)
        assert prog["best_value"].dropna().is_monotonic_decreasing and prog["best_value"].iloc[-1] == ok["value"].min()
        improved = r.admissions().query("status == 'improve'")
        assert (improved["value"] < improved["previous_value"]).all()


def test_a_snapshot_reads_its_tables_once_and_hands_out_copies(run: Run) -> None:
    outside = run.evaluations()
    with run.snapshot():
        first = run.evaluations()
        first["value"] = 0.0  # a caller's change must not reach the next caller
        second = run.evaluations()
        assert run.store.db.in_transaction  # one read transaction: one commit of the writer
    assert not run.store.db.in_transaction
    assert second.equals(outside) and not first.equals(second)


def test_the_children_of_one_llm_call_are_one_call(tmp_path: Path) -> None:
    """The engine logs an LLM call asked for two samples once per child, with the same data (its usage);
    written here through the store as the engine writes it, read back as one call with its tokens once."""
    from evo.program import Program

    store = Store.in_dir(tmp_path)
    store.set_meta("task", "math/circle_packing_26")
    store.set_meta("config", RunConfig(task="math/circle_packing_26").to_dict())
    seed = Program(source="x = 1\n")
    store.add_program(seed, None, events=[("proposed", {"operator": "seed", "island": 0})])
    usage = {"model": "tiny", "prompt_tokens": 100, "completion_tokens": 40, "seconds": 0.5}
    twins = {"operator": "llm_diff", "parents": [seed.id], "island": 0, "seconds": 0.51, "llm": usage}
    alone = {**twins, "llm": {**usage, "completion_tokens": 41}}
    children = [Program(source=f"x = {i}\n", parents=(seed.id,), operator="llm_diff") for i in range(3)]
    for child, call in zip(children, (twins, twins, alone), strict=True):
        store.add_program(child, None, events=[("operator_call", call), ("proposed", {"operator": "llm_diff"})])
    store.log("operator_failed", {**twins, "reason_kind": "operator_error", "reason": "no usable reply"})
    store.close()
    with evo.load(tmp_path) as r:
        calls = r.operator_calls()
    assert calls["children"].tolist() == [2, 1, 0]
    assert calls["program_ids"].tolist() == [[children[0].id, children[1].id], [children[2].id], []]
    assert calls["completion_tokens"].tolist() == [40, 41, 40] and calls["ok"].tolist() == [True, True, False]
    assert calls["model"].tolist() == ["tiny"] * 3 and calls["parents"].tolist() == [[seed.id]] * 3


def test_seeds_from_outside_the_run_carry_their_provenance(tmp_path: Path) -> None:
    """A run seeded from a git repository: `programs()` holds each seed's provenance (None for the task's own
    seed), `provenance()` one row per outside seed with its value here, both read from the real store."""
    import asyncio

    from evo.engine import Engine

    repo = tmp_path / "solutions"
    repo.mkdir()
    seed = (ROOT / "tasks" / "math" / "circle_packing_26" / "seed.py").read_text()
    line = next(x for x in seed.splitlines() if x.startswith("ROWS = "))
    (repo / "rows4.py").write_text(seed.replace(line, "ROWS = 4  # a variant", 1))
    (repo / "LICENSE").write_text("MIT License\n\nPermission is hereby granted, free of charge, ...\n")
    git = ["git", "-C", str(repo), "-c", "user.name=Ada Lovelace", "-c", "user.email=ada@example.org"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "a packing"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    run_dir = tmp_path / "run"
    engine = Engine.create(run_dir, RunConfig(task="math/circle_packing_26", budget=2, workers=1,
                                              seed_from=[f"{repo}@HEAD"]))
    asyncio.run(engine.run_async())
    engine.close()
    with evo.load(run_dir) as r:
        progs = r.programs().set_index("id")
        outside = progs[progs["provenance"].notna()]
        assert len(outside) == 1 and (progs["operator"] == "seed").sum() == 2  # the task's own seed has none
        prov = outside["provenance"].iloc[0]
        assert prov["kind"] == "git" and prov["commit"] == commit and prov["path"] == "rows4.py"
        assert prov["licence"] == "MIT" and prov["author"] == "Ada Lovelace <ada@example.org>"
        assert prov["source"] == f"{repo}@HEAD" and prov["imported"].endswith("Z")
        assert list(r.programs(["status", "provenance"]).columns) == ["status", "provenance"]  # no id asked
        frame = r.provenance()
        assert frame["program_id"].tolist() == list(outside.index) and frame["commit"].tolist() == [commit]
        assert frame["status"].tolist() == ["evaluated"]
        assert frame["value"].iloc[0] == progs.loc[outside.index[0], "value"] > 0
        assert frame["author"].tolist() == ["Ada Lovelace <ada@example.org>"] and r.task_origin() is None


def test_the_rate_counts_the_time_running_not_the_days_between_sessions(tmp_path: Path) -> None:
    """Two sessions of 10 s each, a day apart: 20 s of running, whatever the calendar says."""
    from evo.report.metrics import running_seconds
    from evo.store import Store

    store = Store(tmp_path / "evo.db")
    day = 86_400.0
    store.set_meta("created", 1000.0)
    store._event("run_started", None, None, 1000.0)
    store._event("run_started", None, None, 1000.0 + day)
    store.commit()
    finished = [1002.0, 1010.0, 1000.0 + day + 4, 1000.0 + day + 10]
    assert running_seconds(store, finished) == pytest.approx(20.0)
    assert running_seconds(store, finished[:2]) == pytest.approx(10.0)  # a session that evaluated nothing adds 0
    store.close()
