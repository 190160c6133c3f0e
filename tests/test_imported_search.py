"""The five KernelBench-format problems of benchmarks/kernelbench_problems/ and benchmarks/imported_search.py:
each problem is in KernelBench's format and no built-in task; the real importer makes a task of each whose
reference runs; our Triton seed of each matches that reference under Triton's interpreter; the benchmark's
--dry-run goes from import to its table and JSON on CPU."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evo.task import load_module, load_task
from evo.tasks_import import import_kernelbench
from evo.tasks_import.common import task_name

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = ROOT / "benchmarks" / "kernelbench_problems"
FILES = sorted(PROBLEMS.glob("*.py"))
NAMES = [task_name(p.stem) for p in FILES]

_SEEDS_MATCH = """
import sys
from pathlib import Path
import torch
from evo.eval.kernel_spec import compare_outputs
from evo.task import load_module, load_task
tasks, seeds = Path(sys.argv[1]), Path(sys.argv[2])
for name in sys.argv[3:]:
    ref = load_task(str(tasks / name)).reference
    ours = load_module(seeds / f"{name}.py", f"ours_{name}")
    for i, params in enumerate(ref.SPEC.small):
        inputs = ref.make_inputs(dict(params), 20 + i, "cpu")
        expected = ref.run(*[x.clone() for x in inputs])
        reason = compare_outputs(ours.run(*inputs), expected, ref.SPEC.atol, ref.SPEC.rtol)
        print(name, dict(params), reason or "ok")
"""


def test_the_problems_are_kernelbench_files_and_no_built_in_task() -> None:
    assert len(FILES) == 5 and len(set(NAMES)) == 5
    built_in = {p.name for p in (ROOT / "tasks" / "kernels").iterdir()} | {p.stem for p in (ROOT / "kernels").glob("*.py")}
    assert not set(NAMES) & built_in, set(NAMES) & built_in
    for path, name in zip(FILES, NAMES, strict=True):
        tree = ast.parse(path.read_text())
        model = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model")
        assert any(isinstance(f, ast.FunctionDef) and f.name == "forward" for f in model.body), path
        assert {"get_inputs", "get_init_inputs"} <= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert (PROBLEMS / "triton" / f"{name}.py").is_file(), name  # our Triton seed beside it
        # The file runs as KernelBench runs it, here at small sizes (its size globals cut down).
        module = load_module(path, f"problem_{name}")
        for var in ("batch_size", "rows", "features", "seq_len", "hidden", "channels", "height", "width"):
            if hasattr(module, var):
                setattr(module, var, min(getattr(module, var), 12))
        out = module.Model(*module.get_init_inputs())(*module.get_inputs())
        assert isinstance(out, torch.Tensor) and out.numel() > 0 and bool(torch.isfinite(out).all()), name


@pytest.mark.slow
def test_each_problem_imports_with_a_reference_that_runs_and_our_seed_matches_it(tmp_path: Path) -> None:
    made = import_kernelbench(PROBLEMS, tmp_path)
    assert sorted(p.name for p in made) == sorted(NAMES)
    for name in NAMES:
        task = load_task(str(tmp_path / name))
        ref = task.reference
        assert task.config.family == "kernels" and (tmp_path / name / "origin.json").is_file()
        assert any(w.hidden for w in ref.SPEC.workloads) and len(ref.SPEC.small) == 2
        visible = ref.SPEC.visible()[0]
        assert ref.min_bytes(visible.params) >= 4 * 2**20, name  # the GPU sizes: megabytes, not a launch's cost
        for params in ref.SPEC.small:
            out = ref.run(*ref.make_inputs(dict(params), 1, "cpu"))
            assert isinstance(out, torch.Tensor) and bool(torch.isfinite(out).all()) and out.numel() > 0, name
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _SEEDS_MATCH, str(tmp_path), str(PROBLEMS / "triton"), *NAMES],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 10 and all(line.endswith(" ok") for line in lines), done.stdout


@pytest.mark.slow
def test_the_dry_run_goes_from_import_to_a_table_and_json(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "imported_search.py"), "--dry-run", "--only",
                           "avg_pool_2x2", "--runs", str(runs), "--json", str(out), "--time-limit", "300"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "problem" in done.stdout and "avg_pool_2x2" in done.stdout
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["task"] == "avg_pool_2x2" and row["evaluations"] == 3 and result["dry_run"]
    assert row["torch_seed"] is not None and row["triton_seed"] is not None and row["best"] >= row["seed"]
    assert (runs / "tasks" / "avg_pool_2x2" / "reference.py").is_file() and (runs / "avg_pool_2x2.best.py").is_file()
