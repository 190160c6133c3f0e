"""A kernel job is a message: contents, the task's name and its folder's hash; no path of the engine's machine.

The worker resolves the task by name on its own machine and refuses a folder whose hash differs from the
engine's, so a worker on another node never scores against another version of the task.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from input_probe import SEEN_PRINTER, inputs_seen

from evo.eval.backends.kernel import KernelEvaluator
from evo.eval.bench import BenchConfig
from evo.eval.families.base import task_hash
from evo.program import MAIN_FILE
from evo.task import load_task

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluator(rmsnorm_harness: KernelEvaluator) -> KernelEvaluator:
    return rmsnorm_harness


def _paths_in(value: object) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_in(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths_in(v)]
    return [value] if isinstance(value, str) and value.startswith("/") and os.path.exists(value) else []


def test_a_job_carries_contents_a_name_and_a_hash_but_no_path(evaluator: KernelEvaluator) -> None:
    source = (REPO / "kernels" / "rmsnorm_fwd.py").read_text()
    job = evaluator._job(kind="candidate", files={MAIN_FILE: source}, prepared={})
    assert job["task"] == "kernels/rmsnorm_fwd" and job["task_hash"] == task_hash(evaluator.task)
    assert job["files"][MAIN_FILE] == source
    assert not _paths_in(json.loads(json.dumps(job))), job


def test_the_worker_refuses_a_task_folder_that_differs(evaluator: KernelEvaluator) -> None:
    worker = evaluator._workers[0]
    answer = worker.submit(evaluator._job(kind="reference", task_hash="0" * 32)).result(timeout=120)
    assert answer["status"] == "error" and "differs here from the engine's" in answer["error"], answer


def test_the_worker_refuses_a_task_it_cannot_find(evaluator: KernelEvaluator) -> None:
    worker = evaluator._workers[0]
    answer = worker.submit({**evaluator._job(kind="reference"), "task": "kernels/no_such_task"}).result(timeout=120)
    assert answer["status"] == "error" and "cannot find task 'kernels/no_such_task'" in answer["error"], answer


def test_a_candidate_with_a_helper_file_runs_from_its_contents(evaluator: KernelEvaluator) -> None:
    seed = (REPO / "kernels" / "rmsnorm_fwd.py").read_text()
    files = {"helper.py": seed, MAIN_FILE: "from helper import run  # noqa: F401\n"}
    report = evaluator.evaluate_files_sync(files)
    assert report["status"] == "ok" and report["passed"], report.get("error")
    escaping = evaluator.evaluate_files_sync({MAIN_FILE: seed, "../outside.py": "x = 1\n"})
    assert escaping["status"] == "error" and "leaves the candidate's folder" in escaping["error"]


def test_the_worker_reads_a_task_folder_again_once_it_changed(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "tasks"
    shutil.copytree(REPO / "tasks" / "kernels" / "rmsnorm_fwd", root / "kernels" / "rmsnorm_copy")
    task = load_task(str(root / "kernels" / "rmsnorm_copy"))
    ev = KernelEvaluator(task, 1, tmp_path / "scratch", devices=["cpu"],
                         config=BenchConfig(iters=2, warmup=1, compile_baseline=False), parallel_per_device=1)
    try:
        worker = ev._workers[0]
        first = worker.submit(ev._job(kind="reference")).result(timeout=300)
        assert first["status"] == "ok", first.get("error")
        with open(task.root / "reference.py", "a") as f:
            f.write("\n# edited while the worker runs\n")
        edited = task_hash(task, fresh=True)
        again = worker.submit({**ev._job(kind="reference"), "task_hash": edited}).result(timeout=300)
        assert again["status"] == "ok", again.get("error")
    finally:
        ev.close()


def test_a_gpu_workers_machine_without_pydantic_reads_every_task_as_the_engine_does() -> None:
    """GPU workers may have only torch and triton: without pydantic, task.toml is read unchecked, and reads
    the same as the engine's checked reading for every task of the repository."""
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "sys.modules['pydantic'] = None\n"
        "from evo.task import list_tasks, load_task\n"
        "print(json.dumps({n: repr(load_task(n).config) for n in list_tasks()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    from evo.task import list_tasks, load_task

    unchecked = json.loads(done.stdout)
    assert set(unchecked) == set(list_tasks()) and len(unchecked) > 30
    for name, text in unchecked.items():
        assert text == repr(load_task(name).config), name


def test_evaluators_of_two_tasks_share_one_pool_at_once(evaluator: KernelEvaluator) -> None:
    """A suite's tasks share a worker pool: their jobs are told apart, so each evaluation gets its own answer
    (ids counted per evaluator once collided, and one of two concurrent evaluations waited forever)."""
    from concurrent.futures import ThreadPoolExecutor

    pair = [KernelEvaluator(load_task(f"kernels/{name}"), 1, evaluator.scratch, config=evaluator.config,
                            pool=evaluator.pool) for name in ("rmsnorm_fwd", "silu_fwd")]
    assert pair[0]._job(kind="reference")["id"] != pair[1]._job(kind="reference")["id"]
    with ThreadPoolExecutor(2) as ex:
        futures = [ex.submit(e.evaluate_source_sync, (REPO / "kernels" / f"{e.task.name.split('/')[1]}.py").read_text())
                   for e in pair]
        reports = [f.result(timeout=300) for f in futures]
    for e, r in zip(pair, reports, strict=True):
        assert r["status"] == "ok" and r["passed"], (e.task.name, r.get("error"))


def test_a_run_on_fresh_inputs_shares_no_input_with_the_sessions(evaluator: KernelEvaluator) -> None:
    """The re-run of a held candidate (`evaluate_on_fresh_inputs`) draws a session of inputs of its own: the
    candidate sees none of the inputs that the evaluator's own session showed it."""
    source = (REPO / "kernels" / "rmsnorm_fwd.py").read_text() + SEEN_PRINTER
    first = evaluator.evaluate_source_sync(source)
    fresh = evaluator.evaluate_files_sync({MAIN_FILE: source}, fresh_inputs=True)
    for r in (first, fresh):
        assert r["status"] == "ok" and r["passed"], (r.get("error"), r.get("traceback"), r.get("log_tail"))
    seen, seen_fresh = (inputs_seen(r, evaluator.task.reference) for r in (first, fresh))
    assert seen and seen_fresh
    assert not seen & seen_fresh, seen & seen_fresh


@pytest.mark.slow
def test_a_task_the_worker_let_go_runs_its_reference_job_again(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Past `EVO_TASKS_HELD` tasks, a worker lets the oldest one's data go: that task's next candidate still gets
    judged (its evaluator runs the reference job again), never failed for the worker's memory."""
    from evo.eval.backends.kernel import WorkerPool

    monkeypatch.setenv("EVO_TASKS_HELD", "1")
    config = BenchConfig(iters=2, warmup=1, compile_baseline=False)
    pool = WorkerPool(tmp_path, ["cpu"], parallel_per_device=1)
    try:
        rms, silu = (KernelEvaluator(load_task(f"kernels/{n}"), 1, tmp_path, config=config, pool=pool)
                     for n in ("rmsnorm_fwd", "silu_fwd"))
        for ev in (rms, silu, rms):  # the third finds rmsnorm's data gone
            report = ev.evaluate_source_sync((REPO / "kernels" / f"{ev.task.name.split('/')[1]}.py").read_text())
            assert report["status"] == "ok" and report["passed"], (ev.task.name, report.get("error"))
    finally:
        pool.close()


def test_a_candidates_cache_gets_the_trusted_helpers_and_harness_kernels_and_nothing_else(tmp_path: Path) -> None:
    """A candidate's private Triton cache starts with copies of the shared cache's C helpers and the harness's
    own kernels (the digest's, the mask stream's: no child compiles them again), never another kernel (a planted
    one would run)."""
    from evo.eval.worker_child import HARNESS_KERNELS, _copy_compiled_helpers

    shared = tmp_path / "shared"
    planted = ("helpers", "cuda_utils.so"), ("digest", f"{HARNESS_KERNELS[0]}.cubin"), \
        ("stream", f"{HARNESS_KERNELS[1]}.json"), ("other", "_some_kernel.cubin")
    for entry, name in planted:
        (shared / entry).mkdir(parents=True)
        (shared / entry / name).write_bytes(b"compiled")
    private = tmp_path / "private"
    _copy_compiled_helpers(shared, private)
    assert sorted(p.name for p in private.iterdir()) == ["digest", "helpers", "stream"]
    copy = private / "digest" / f"{HARNESS_KERNELS[0]}.cubin"
    assert copy.read_bytes() == b"compiled" and not copy.samefile(shared / "digest" / f"{HARNESS_KERNELS[0]}.cubin")


def test_the_correctness_rung_checks_the_visible_workloads_and_times_nothing(evaluator: KernelEvaluator) -> None:
    """The kernels family's first rung, through the pipeline: a candidate right on every visible workload and
    wrong on the hidden ones passes it untimed (no time, no bound, no SOL score), and the timing rung refuses
    it on a hidden shape; a candidate wrong on a visible workload fails the first rung already."""
    from evo.eval.pipeline import Pipeline
    from evo.program import Program

    # Right on the visible workload (D = 96 on CPU), one row wrong on the hidden one (D = 200).
    special = (REPO / "kernels" / "rmsnorm_fwd.py").read_text() + (
        "\n\n_rows = run\n\n\ndef run(x, weight):\n    y = _rows(x, weight)\n    if x.shape[1] > 128:\n"
        "        y[-1].zero_()\n    return y\n")
    pipeline = Pipeline(evaluator.task, evaluator)  # type: ignore[arg-type]
    try:
        first = pipeline.evaluate_sync(Program(source=special), "correctness")
        assert first.ok and first.score == 0.0 and "sol_score" not in first.metrics, first.error
        assert first.report["timed"] is False and first.report["bounds"] == {}
        assert all(row["time_s"] is None for row in first.report["workloads"])
        names = {n for n, _, _ in first.checks}
        assert {"dynamic:fresh_inputs", "dynamic:timer_integrity", "dynamic:net_guard"} <= names, names
        assert "dynamic:time_bound" not in names and "dynamic:timed_outputs" not in names
        whole = pipeline.evaluate_sync(Program(source=special), "timing")
        assert not whole.ok and "dynamic:hidden_shapes" in (whole.error or ""), whole.error
        wrong = pipeline.evaluate_sync(Program(source="import torch\n\ndef run(x, weight):\n"
                                                      "    return torch.zeros_like(x)\n"), "correctness")
        assert not wrong.ok and wrong.failure == "invalid", (wrong.failure, wrong.error)
    finally:
        pipeline.close(backend=False)


def test_a_gpu_report_gives_possible_time_a_result_either_way() -> None:
    """The publish level asks every dynamic check for a result: `possible_time` must be reported when it holds,
    not only when it fails (it was missing, and every kernel was refused publication on an H200)."""
    from types import SimpleNamespace

    from evo.eval.peaks import peaks_for, speed_of_light_s
    from evo.eval.reference_data import workloads_for

    task = load_task("kernels/rmsnorm_fwd")
    ref, device = task.reference, "NVIDIA H100 80GB HBM3"
    workloads = workloads_for(ref.SPEC, "cuda")
    t_sol = {w.name: speed_of_light_s(ref.flops(dict(w.params)), ref.min_bytes(dict(w.params)), ref.SPEC.dtype,
                                      peaks_for(device)) for w in workloads}
    prepared = {"workloads": {w.name: {"eager": {"median_s": 9 * t_sol[w.name]}, "baseline_s": 5 * t_sol[w.name]}
                              for w in workloads}}

    def report(fraction_of_sol: float) -> dict:
        times = {w.name: {"median_s": fraction_of_sol * t_sol[w.name], "spread": 0.0} for w in workloads}
        answer = {"status": "ok", "result": {"checks": [], "workloads": times}}
        return KernelEvaluator.score(SimpleNamespace(task=task), answer, prepared, device)  # type: ignore[arg-type]

    honest = report(1.5)
    assert [c for c in honest["checks"] if c[0] == "dynamic:possible_time"] == \
        [("dynamic:possible_time", True, "")] * len(workloads) and honest["passed"]
    fooled = report(0.5)
    assert not fooled["passed"] and fooled["error"].startswith("dynamic:possible_time: workload ")
    on_cpu = KernelEvaluator.score(SimpleNamespace(task=task), {"status": "ok", "result": {"checks": [], "workloads": {
        w.name: {"median_s": 1.0, "spread": 0.0} for w in workloads_for(ref.SPEC, "cpu")}}},
        {"workloads": {w.name: {"eager": {"median_s": 1.0}, "baseline_s": 1.0} for w in workloads_for(ref.SPEC, "cpu")}},
        "cpu")
    assert not any(c[0] == "dynamic:possible_time" for c in on_cpu["checks"])  # no bound there: publish refuses


def test_a_runs_workers_are_its_childrens_number_on_each_gpu(tmp_path: Path) -> None:
    """`--workers` evaluations in flight are that many children (the worker held 4 whatever it said), half of
    them checking at once past 8."""
    ev = KernelEvaluator(load_task("kernels/rmsnorm_fwd"), 12, tmp_path, devices=["cpu"])
    try:
        argv = ev.pool.workers[0].proc.args
        assert isinstance(argv, list)
        assert argv[argv.index("--parallel") + 1] == "12" and argv[argv.index("--checking-slots") + 1] == "6"
    finally:
        ev.close()
