"""Seeding a search: every source (file, folder, git repository at a tag, export, run directory, published
archive) read with its provenance; every seed through the pipeline within the budget; near-duplicates dropped;
`evo seed` on a stopped run; `evo publish`'s archive seeding a new run at the archive's scores."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError
from evo.program import Status
from evo.seeding import read_source
from evo.store import Store
from evo.task import load_task

TASK = "math/circle_packing_26"
SEED = Path(__file__).resolve().parent.parent / "tasks" / "math" / "circle_packing_26" / "seed.py"
MIT = "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy...\n"


def evo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", *args], capture_output=True, text=True, timeout=600)


def variant(**settings: object) -> str:
    """The task's seed with some of its tunable settings changed: a different program, a different score."""
    text = SEED.read_text()
    for name, value in settings.items():
        line = next(x for x in text.splitlines() if x.startswith(f"{name} = "))
        text = text.replace(line, f"{name} = {value!r}  # set by the test", 1)
    return text


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose tag v1 holds two hex packings, and whose later commit changes one of them."""
    r = tmp_path / "solutions"
    (r / "packings").mkdir(parents=True)
    git(r, "init", "-q")
    git(r, "config", "user.email", "t@example.org")
    git(r, "config", "user.name", "t")
    (r / "LICENSE").write_text(MIT)
    (r / "packings" / "hex4.py").write_text(variant(PATTERN="hex", ROWS=4))
    (r / "packings" / "hex6.py").write_text(variant(PATTERN="hex", ROWS=6))
    (r / "README.md").write_text("not a program\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "v1")
    git(r, "tag", "v1")
    (r / "packings" / "hex4.py").write_text(variant(PATTERN="rings"))
    git(r, "commit", "-qam", "later")
    return r


def test_each_source_is_read_with_its_provenance(tmp_path: Path, repo: Path) -> None:
    task = load_task(TASK)
    one = tmp_path / "one.py"
    one.write_text(variant(ROWS=4))
    (seed,) = read_source(str(one), task)
    assert seed.source == one.read_text() and seed.provenance["kind"] == "file"
    # A folder: the glob chooses (recursive with **), and its LICENSE file names the licence.
    folder = tmp_path / "folder"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.py").write_text(variant(ROWS=3))
    (folder / "deep" / "b.py").write_text(variant(ROWS=7))
    (folder / "notes.txt").write_text("x")
    (folder / "LICENSE").write_text(MIT)
    assert [s.provenance["path"] for s in read_source(str(folder), task)] == ["a.py"]
    both = read_source(f"{folder}:**/*.py", task)
    assert [s.provenance["path"] for s in both] == ["a.py", "deep/b.py"]
    assert {s.provenance["licence"] for s in both} == {"MIT"}
    # A git repository at a tag: the files as they were at that tag, its commit, its licence.
    tagged = read_source(f"{repo}@v1:packings/*.py", task)
    v1 = git(repo, "rev-parse", "v1")
    assert [s.provenance["path"] for s in tagged] == ["packings/hex4.py", "packings/hex6.py"]
    assert tagged[0].source == variant(PATTERN="hex", ROWS=4)  # not the later commit's rings
    assert all(s.provenance["commit"] == v1 and s.provenance["licence"] == "MIT" for s in tagged)
    # The repository without a revision: HEAD, the later commit.
    head = read_source(f"{repo}:packings/hex4.py", task)
    assert head[0].source == variant(PATTERN="rings") and head[0].provenance["commit"] == git(repo, "rev-parse", "HEAD")
    # A licence given by the user fills a gap, and never overwrites the one the source names.
    assert read_source(str(one), task, licence="CC0-1.0")[0].provenance["licence"] == "CC0-1.0"
    assert {s.provenance["licence"] for s in read_source(f"{folder}:**/*.py", task, licence="CC0-1.0")} == {"MIT"}
    assert read_source(f"{repo}@v1:packings/*.py", task, licence="CC0-1.0")[0].provenance["licence"] == "MIT"


@pytest.mark.parametrize(("source", "needle"), [
    ("{tmp}/missing.py", "no such file or folder"),
    ("{repo}@v9", "no commit, tag or branch 'v9'"),
    ("{repo}@v1:*.cu", "holds no program"),
    ("{tmp}/table.jsonl", "line 1"),
    ("{tmp}/empty.py", "empty.py is empty, not a program"),
])
def test_a_bad_source_is_one_line_naming_it(tmp_path: Path, repo: Path, source: str, needle: str) -> None:
    (tmp_path / "table.jsonl").write_text("[1, 2]\n")
    (tmp_path / "empty.py").write_text("\n")
    text = source.format(tmp=tmp_path, repo=repo)
    with pytest.raises(EvoError, match=needle) as e:
        read_source(text, load_task(TASK))
    assert "\n" not in str(e.value)


def test_a_run_seeded_from_several_sources_evaluates_each_seed_in_its_budget(tmp_path: Path, repo: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "copy_of_task_seed.py").write_text(SEED.read_text())  # a near-duplicate of the task's own seed
    (folder / "broken.py").write_text("def construct_packing(:\n")  # does not parse
    (folder / "rows3.py").write_text(variant(ROWS=3))
    config = RunConfig(task=TASK, budget=9, workers=2, seed=3, seed_from=[f"{repo}@v1:packings/*.py", str(folder)])
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("evo.run_dir")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO  # as `evo run` shows evo's logs
    try:
        engine = Engine.create(tmp_path / "run", config)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # One line at the start says what was kept and what was dropped, and why, before any budget is spent.
    (line,) = [s for s in said if s.startswith("--seed-from:")]
    assert "3 seed(s) kept, 2 dropped" in line and "broken.py: parse_error (line 1" in line
    assert "copy_of_task_seed.py: near_duplicate" in line
    asyncio.run(engine.run_async())
    engine.close()
    store = Store.in_dir(tmp_path / "run", readonly=True)
    assert store.count_evaluations() == 9  # the seeds count in the budget: exactly 9
    seeds = {p.meta["seed_file"]: p for p in store.iter_programs() if p.operator == "seed"}
    assert set(seeds) == {"seed.py", "hex4.py", "hex6.py", "copy_of_task_seed.py", "broken.py", "rows3.py"}
    for name in ("hex4.py", "hex6.py", "rows3.py"):  # through the pipeline: scored and audited
        p = seeds[name]
        assert p.status == Status.EVALUATED and json.loads(p.verdict or "{}")["level"] == "full", name
    assert seeds["copy_of_task_seed.py"].status == Status.REJECTED
    assert seeds["copy_of_task_seed.py"].meta["reason_kind"] == "near_duplicate"
    assert seeds["broken.py"].status == Status.REJECTED and seeds["broken.py"].meta["reason_kind"] == "parse_error"
    provenance = store.provenance()
    hex4 = provenance[seeds["hex4.py"].id]
    assert hex4["commit"] == git(repo, "rev-parse", "v1") and hex4["licence"] == "MIT"
    assert hex4["path"] == "packings/hex4.py" and hex4["source"] == f"{repo}@v1:packings/*.py"
    assert seeds["seed.py"].id not in provenance  # the task's own seed has no outside origin
    store.close()
    shown = evo("show", str(tmp_path / "run"))
    assert shown.returncode == 0, shown.stderr
    assert "seeds from outside the run (5)" in shown.stdout and "dropped: near_duplicate" in shown.stdout
    assert git(repo, "rev-parse", "v1")[:12] in shown.stdout and "packings/hex6.py" in shown.stdout
    # `evo report` shows the same provenance: a section naming each outside seed's commit, path, licence, author.
    from evo.report.html import write_report

    page = write_report(tmp_path / "run").read_text()
    section = page[page.index("<h2>Provenance</h2>"):page.index("<h2>Best ")]
    assert "5 seeds came from outside the run" in section and section.count("<tr>") == 6  # a head and 5 rows
    assert git(repo, "rev-parse", "v1")[:12] in section and "packings/hex6.py" in section and "rows3.py" in section
    assert "MIT" in section and "t &lt;t@example.org&gt;" in section and "near_duplicate" not in section


def test_evo_seed_queues_seeds_that_resume_evaluates_first(tmp_path: Path, repo: Path) -> None:
    run_dir = tmp_path / "run"
    engine = Engine.create(run_dir, RunConfig(task=TASK, budget=4, workers=1))
    asyncio.run(engine.run_async())
    engine.close()
    result = evo("seed", str(run_dir), "--from", f"{repo}@v1:packings/*.py", "--from", str(SEED))
    assert result.returncode == 0, result.stderr
    assert "queued 2 seeds, dropped 1" in result.stdout and "near_duplicate" in result.stdout
    assert "--budget" in result.stdout  # the budget is spent: the way to evaluate them is named
    resumed = evo("resume", str(run_dir), "--budget", "6", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    store = Store.in_dir(run_dir, readonly=True)
    assert store.count_evaluations() == 6
    order = [store.get_program(pid) for _, _, _, pid, _ in store.events("evaluated")]
    assert [p.meta.get("seed_file") for p in order[4:]] == ["hex4.py", "hex6.py"]  # the queued seeds first
    assert all(p.status == Status.EVALUATED for p in order[4:])
    assert len(store.provenance()) == 3  # two queued, one dropped: all on record
    store.close()


def test_seeds_from_an_export_and_from_another_runs_elites(tmp_path: Path) -> None:
    first = tmp_path / "first"
    engine = Engine.create(first, RunConfig(task=TASK, budget=12, workers=2, seed=5))
    asyncio.run(engine.run_async())
    engine.close()
    task = load_task(TASK)
    elites = read_source(str(first), task)
    store = Store.in_dir(first, readonly=True)
    best = store.best_programs(1)[0]
    assert elites[0].provenance["program_id"] == best.id and elites[0].source == best.source
    assert elites[0].provenance["value"] == pytest.approx(best.metrics["sum_radii"])
    valid = {p.id for p in store.iter_programs(statuses=["evaluated"])}
    store.close()
    assert {s.provenance["program_id"] for s in elites} <= valid
    exported = evo("export", str(first), "--out", str(tmp_path / "all.jsonl"))
    assert exported.returncode == 0, exported.stderr
    rows = read_source(str(tmp_path / "all.jsonl"), task)
    assert {s.provenance["program_id"] for s in rows} == valid  # the valid programs only
    other = tmp_path / "other_task"
    engine = Engine.create(other, RunConfig(task="math/circle_packing_32", budget=2, workers=1))
    asyncio.run(engine.run_async())
    engine.close()
    with pytest.raises(EvoError, match="is a run of math/circle_packing_32, not math/circle_packing_26"):
        read_source(str(other), task)


def test_a_run_seeded_from_a_published_archive_starts_at_its_scores(tmp_path: Path) -> None:
    donor = tmp_path / "donor"
    relaxed = tmp_path / "relaxed.py"
    relaxed.write_text(variant(RELAX_STEPS=100, STEP=0.02))  # beats the task's seed (2.36 against 2.17)
    engine = Engine.create(donor, RunConfig(task=TASK, budget=16, workers=2, seed=11, seed_from=[str(relaxed)]))
    asyncio.run(engine.run_async())
    engine.close()
    archive = tmp_path / "archive"
    published = evo("publish", str(donor), "--top", "2", "--archive", str(archive))
    assert published.returncode == 0, published.stderr
    jsonl = archive / "math-cpu.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 2 and {r["device"] for r in rows} == {"cpu"}
    assert all(r["task"] == TASK and r["verdict"]["level"] == "publish" and r["source"] for r in rows)
    assert all(r["provenance"]["run_dir"] == str(donor.resolve()) for r in rows)
    best_value = max(r["value"] for r in rows)
    assert best_value > 2.3
    # Publishing again replaces the rows (no duplicates).
    assert evo("publish", str(donor), "--top", "2", "--archive", str(archive)).returncode == 0
    assert len(jsonl.read_text().splitlines()) == 2
    run_dir = tmp_path / "seeded"
    result = evo("run", TASK, "--run-dir", str(run_dir), "--budget", "3", "--workers", "1", "--quiet",
                 "--seed-from", str(jsonl))
    assert result.returncode == 0, result.stderr
    store = Store.in_dir(run_dir, readonly=True)
    seeded = [p for p in store.iter_programs() if p.id in store.provenance()]
    assert len(seeded) == 2 and any(p.status == Status.EVALUATED for p in seeded)
    # A published program identical to the task's own seed is dropped as its near-duplicate, never evaluated twice.
    assert all(p.status == Status.EVALUATED or p.meta["reason_kind"] == "near_duplicate" for p in seeded)
    # The first evaluations are the seeds: the run's best after them is the archive's best.
    first_three = [store.get_program(pid) for _, _, _, pid, _ in store.events("evaluated")][:3]
    assert max(p.metrics.get("sum_radii", 0.0) for p in first_three) == pytest.approx(best_value)
    assert store.get_meta("config")["seed_from"] == [str(jsonl)]
    store.close()
