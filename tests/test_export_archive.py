"""benchmarks/export_archive.py on CPU runs: the best programs of a folder of runs (two tasks) published into one
`<family>-<device>.jsonl`, rows merged and replaced, the device checked, and new runs seeded from the file
starting at its values."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from evo.config import RunConfig
from evo.engine import Engine
from evo.seeding import read_source
from evo.task import load_task

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("math/circle_packing_26", "math/circle_packing_32")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_archive", ROOT / "benchmarks" / "export_archive.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_folder_of_runs_becomes_one_archive_that_seeds_new_runs_at_its_values(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for task in TASKS:
        engine = Engine.create(runs / task.split("/")[1], RunConfig(task=task, budget=4, workers=1, seed=2))
        asyncio.run(engine.run_async())
        engine.close()
    script, archive = _script(), tmp_path / "archive"
    result = script.main([str(runs), "--top", "2", "--archive", str(archive), "--expect-device", "cpu",
                          "--check-seeding", "--work", str(tmp_path / "check"), "--workers", "1",
                          "--json", str(tmp_path / "result.json")])
    jsonl = archive / "math-cpu.jsonl"
    assert result["files"] == [str(jsonl)]
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted({r["task"] for r in rows}) == list(TASKS) and len(rows) == 4  # 2 a run, both tasks, one file
    assert all(r["verdict"]["level"] == "publish" and r["device"] == "cpu" and r["source"] for r in rows)
    assert [r["task"] for r in rows] == sorted(r["task"] for r in rows)  # sorted by task, best first
    for task in TASKS:  # each program's source and record beside the file, as `evo publish` writes them
        assert len(list((archive / task).glob("*.py"))) == 2 and len(list((archive / task).glob("*.json"))) == 2
    assert sorted(p.name for p in archive.iterdir()) == ["math", "math-cpu.jsonl"]  # no staging left behind
    # Each task's seeded run starts at the archive's best value (CPU math: exactly).
    checks = {c["task"]: c for c in result["seeding"]}
    for task in TASKS:
        best = max(r["value"] for r in rows if r["task"] == task)
        assert checks[task]["exit"] == 0 and checks[task]["seeded_best"] == pytest.approx(best), checks[task]
    assert json.loads((tmp_path / "result.json").read_text())["seeding"] == result["seeding"]
    # `evo seed` reads the file as a source: this task's rows, with where they were measured.
    seeds = read_source(str(jsonl), load_task(TASKS[0]))
    assert len(seeds) == 2 and {s.provenance["kind"] for s in seeds} == {"archive"}
    assert all(s.provenance["device"] == "cpu" and s.provenance["value"] is not None for s in seeds)
    # Again from one run: its rows are replaced, the other task's kept; a device other than expected is refused.
    with pytest.raises(SystemExit, match="rows measured on cpu, not h100"):
        script.main([str(runs / "circle_packing_26"), "--top", "2", "--archive", str(archive),
                     "--expect-device", "h100"])
    assert len(jsonl.read_text().splitlines()) == 4
    # The seeding check alone, of the file as it stands.
    again = script.main(["--check", str(jsonl), "--work", str(tmp_path / "check2"), "--workers", "1"])
    assert again["rows"] == [] and [c["seeded_best"] for c in again["seeding"]] == [
        checks[t]["seeded_best"] for t in TASKS]
    with pytest.raises(SystemExit, match="or --check FILE"):
        script.main([])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="holds no evo run"):
        script.main([str(empty)])
