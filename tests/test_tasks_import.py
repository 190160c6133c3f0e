"""Benchmark problems as evo kernel tasks, from fixtures written in the benchmarks' formats for these tests:
the folder an import writes, its counts of FLOPs and bytes, its hidden workloads and calibrated tolerances,
and its seed through `evo eval` on CPU (Triton's interpreter)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evo.errors import EvoError
from evo.eval.kernel_spec import reference_error
from evo.task import load_module, load_task
from evo.tasks_import import import_kernelbench, import_solexecbench

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KB = FIXTURES / "kernelbench"
SOL = FIXTURES / "solexecbench" / "scaled_rmsnorm"


def evo(*args: str, tasks_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "EVO_TASKS_PATH": str(tasks_path)}
    return subprocess.run([sys.executable, "-m", "evo", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported")
    import_kernelbench(KB, out)
    import_solexecbench(SOL, out, solution=SOL / "solution_triton.json")
    return out


def test_kernelbench_import_counts_flops_and_bytes_on_the_reference(imported: Path) -> None:
    task = load_task(str(imported / "linear_tanh_rowmax"))
    assert task.config.family == "kernels" and task.config.metric == "sol_score"
    ref = task.reference
    spec = ref.SPEC
    visible, hidden = spec.visible()[0], next(w for w in spec.workloads if w.hidden)
    # nn.Linear(640, 320) on 64 rows: one addmm of 2*M*N*K FLOPs (tanh and amax are not counted by FlopCounterMode)
    assert ref.flops(visible.params) == 2 * 64 * 640 * 320
    # the input, the weight, the bias and the (64, 1) output, in float32
    assert ref.min_bytes(visible.params) == 4 * (64 * 640 + 320 * 640 + 320 + 64)
    assert hidden.params == {"batch_size": 57, "in_features": 561, "out_features": 281}  # odd, cut by an eighth
    assert ref.flops(hidden.params) == 2 * 57 * 561 * 281
    x, w, b = ref.make_inputs(hidden.params, 3, "cpu")
    assert x.shape == (57, 561) and w.shape == (281, 561) and b.shape == (281,) and x.dtype == torch.float32
    assert ref.run(x, w, b).shape == (57, 1)
    assert not torch.equal(ref.make_inputs(hidden.params, 4, "cpu")[0], x)  # a seed makes other inputs
    # An elementwise problem: no FLOPs counted; bytes of x, the gain and the output.
    gelu = load_task(str(imported / "scaled_gelu_residual")).reference
    assert gelu.SPEC.category == "single_op" and gelu.flops({}) == 0.0
    assert gelu.min_bytes({}) == 4 * (2 * 96 * 1536 + 1536)
    assert (imported / "linear_tanh_rowmax" / "problem.py").read_text() == (KB / "2_Linear_Tanh_RowMax.py").read_text()


def test_an_imported_task_records_its_origin(imported: Path) -> None:
    from evo.report.provenance import origin_line, task_origin

    kb = task_origin(load_task(str(imported / "linear_tanh_rowmax")))
    assert kb is not None and kb["benchmark"] == "KernelBench" and kb["file"] == "2_Linear_Tanh_RowMax.py"
    assert kb["sha256"] == hashlib.sha256((KB / "2_Linear_Tanh_RowMax.py").read_bytes()).hexdigest()
    assert kb["imported"][:4].isdigit() and kb["path"] == str((KB / "2_Linear_Tanh_RowMax.py").resolve())
    sol = task_origin(load_task(str(imported / "scaled_rmsnorm_h256")))
    published = json.loads((SOL / "solution_triton.json").read_text())
    assert sol is not None and sol["benchmark"] == "SOL-ExecBench" and sol["problem"] == "scaled_rmsnorm"
    assert sol["solution"] == "solution_triton.json" and sol["author"] == published["author"]
    assert f"by {published['author']}" in origin_line(sol)
    assert task_origin(load_task("kernels/softmax_fwd")) is None  # a built-in task has no import record


@pytest.mark.parametrize("name", ["linear_tanh_rowmax", "scaled_gelu_residual", "scaled_rmsnorm_h256"])
def test_tolerance_covers_the_reference_own_error(imported: Path, name: str) -> None:
    ref = load_task(str(imported / name)).reference
    for params in ref.SPEC.small:
        for seed in (5, 6):  # other seeds than the calibration's
            _, rel_err = reference_error(ref, params, seed)  # the error relative to the largest value
            assert rel_err * 2 <= ref.SPEC.rtol and rel_err * 2 <= ref.SPEC.atol, (params, rel_err)
    assert any(w.hidden for w in ref.SPEC.workloads) and ref.SPEC.visible()
    assert "calibrated at import" in ref.SPEC.notes


def test_solexecbench_import_keeps_the_workloads_and_hides_every_third(imported: Path) -> None:
    folder = imported / "scaled_rmsnorm_h256"
    ref = load_task(str(folder)).reference
    workloads = ref.SPEC.workloads
    assert [w.params["num_tokens"] for w in workloads] == [1, 7, 32, 100, 257, 1024, 3]  # safetensors one skipped
    assert [w.hidden for w in workloads] == [False, False, True, False, False, True, False]
    assert all(w.params["hidden_size"] == 256 for w in workloads) and ref.SCALARS == {"eps": 1e-6}
    assert ref.SPEC.dtype == "bfloat16" and ref.SPEC.rtol >= 1e-2
    assert ref.min_bytes({"num_tokens": 10, "hidden_size": 256}) == 2 * (10 * 256 * 2 + 256)
    x, w = ref.make_inputs({"num_tokens": 10, "hidden_size": 256}, 1, "cpu")
    assert x.dtype == torch.bfloat16 and w.shape == (256,) and float(w.float().std()) > 0.5  # not all-ones weights
    seed = (folder / "seed.py").read_text()
    assert "@triton.jit" in seed and "triton_rowwise_rmsnorm" in seed  # the published solution is the seed
    # Without a solution the seed is the reference's own code behind the same interface.
    plain = import_solexecbench(SOL, imported / "plain")
    assert "def _reference_run(" in (plain / "seed.py").read_text()
    module = load_module(plain / "seed.py", "plain_seed")
    assert torch.equal(module.run(x, w), ref.run(x, w))


def test_the_kernelbench_seed_builds_its_model_at_import_never_per_call(imported: Path) -> None:
    """A Model built on every call was half a millisecond of Python in the seed's own time (on a CPU)."""
    folder = imported / "linear_tanh_rowmax"
    seed = load_module(folder / "seed.py", "kb_seed_builds")
    ref = load_module(folder / "reference.py", "kb_seed_builds_ref")
    built = []
    original = seed.Model.__init__

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        built.append(args)
        original(self, *args, **kwargs)

    seed.Model.__init__ = counting
    try:
        params = dict(ref.SPEC.small[0])
        inputs = ref.make_inputs(params, 0, "cpu")
        assert torch.allclose(seed.run(*inputs), ref.run(*inputs))
        seed.run(*inputs)
    finally:
        seed.Model.__init__ = original
    assert built == []


@pytest.mark.parametrize("task", ["linear_tanh_rowmax", "scaled_rmsnorm_h256"])
def test_the_imported_seed_passes_evo_eval_on_cpu(imported: Path, task: str) -> None:
    result = evo("eval", task, str(imported / task / "seed.py"), "--json", tasks_path=imported)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["ok"] and data["verdict"]["passed"] and data["verdict"]["level"] == "full"
    assert data["family"] == "kernels" and data["value"] > 0


def test_the_cli_imports_and_refuses_to_overwrite(tmp_path: Path) -> None:
    problem = tmp_path / "3_Double_Softplus.py"
    problem.write_text((KB / "1_Scaled_GELU_Residual.py").read_text().replace(
        'torch.nn.functional.gelu(x * self.gain, approximate="tanh") + x',
        "torch.nn.functional.softplus(torch.nn.functional.softplus(x) * self.gain)"))
    out = tmp_path / "tasks"
    first = evo("tasks", "import", "kernelbench", str(problem), "--out", str(out), tasks_path=out)
    assert first.returncode == 0, first.stderr
    assert (out / "double_softplus" / "task.toml").is_file()
    assert "origin.json" in first.stdout and "reference.py" in first.stdout  # what was written, as it is there
    listed = evo("tasks", tasks_path=out)
    assert listed.returncode == 0 and "double_softplus" in listed.stdout
    again = evo("tasks", "import", "kernelbench", str(problem), "--out", str(out), tasks_path=out)
    assert again.returncode == 2 and "exists: give --force" in again.stdout + again.stderr
    assert len((again.stdout + again.stderr).strip().splitlines()) == 1
    # A folder imported again keeps the tasks that exist and adds the new ones.
    folder = tmp_path / "problems"
    folder.mkdir()
    problem.rename(folder / problem.name)
    (folder / "1_Scaled_GELU_Residual.py").write_text((KB / "1_Scaled_GELU_Residual.py").read_text())
    before = (out / "double_softplus" / "task.toml").stat().st_mtime_ns
    more = evo("tasks", "import", "kernelbench", str(folder), "--out", str(out), tasks_path=out)
    assert more.returncode == 0, more.stderr
    assert "kept 1 task folder(s) that exist" in more.stderr and "double_softplus" in more.stderr
    assert (out / "scaled_gelu_residual" / "task.toml").is_file()
    assert (out / "double_softplus" / "task.toml").stat().st_mtime_ns == before


def test_a_file_that_is_no_problem_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "not_a_problem.py"
    bad.write_text("import torch\n\ndef get_inputs():\n    return []\n")
    with pytest.raises(EvoError, match="defines no Model, get_init_inputs"):
        import_kernelbench(bad, tmp_path / "out")
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "definition.json").write_text("{}")
    with pytest.raises(EvoError, match="needs definition.json and workload.jsonl"):
        import_solexecbench(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
