"""Several judge processes per worker (`evo/eval/judge_process.py`): the lead's helpers judge children as the
lead does, on the CPU (Triton's interpreter)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from evo.eval.backends.kernel import KernelEvaluator, WorkerPool
from evo.eval.bench import BenchConfig
from evo.task import load_task

REPO = Path(__file__).resolve().parents[1]
SEED = (REPO / "kernels" / "rmsnorm_fwd.py").read_text()
MUTATES = (REPO / "tests" / "redteam" / "hacks" / "inplace_input.py").read_text()


@pytest.fixture(scope="module")
def two_judges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelEvaluator]:
    scratch = tmp_path_factory.mktemp("two-judges")
    pool = WorkerPool(scratch, ["cpu"], parallel_per_device=3, checking_slots=3, judges=2)
    ev = KernelEvaluator(load_task("kernels/rmsnorm_fwd"), 1, scratch,
                         config=BenchConfig(iters=2, warmup=1, compile_baseline=False), pool=pool)
    yield ev
    ev.close()
    pool.close()


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_helper_judges_children_as_the_lead_does(two_judges: KernelEvaluator) -> None:
    with ThreadPoolExecutor(3) as ex:
        reports = list(ex.map(two_judges.evaluate_source_sync, [SEED, MUTATES, SEED]))
    honest = [reports[0], reports[2]]
    assert all(r["status"] == "ok" and r["passed"] for r in honest), [r.get("error") for r in honest]
    assert not reports[1]["passed"] and "dynamic:input_mutation" in reports[1]["error"], reports[1].get("error")
    # Three children at once, two judges: each judged at least one (the lead takes the first, a helper the next),
    # so the helper held the task's expected outputs and timing plan, shared by the lead.
    assert len({r["judge_pid"] for r in reports}) == 2, [r["judge_pid"] for r in reports]


def _parent_of(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


# The seed, made slow (a pause in every call): still judging when the helper is killed.
SLOW = SEED + "\n\nimport time as _time\n_fast_run = run\n\n\ndef run(*args):\n    _time.sleep(0.2)\n    return _fast_run(*args)\n"


def test_a_helper_that_dies_costs_only_the_child_it_was_judging(two_judges: KernelEvaluator) -> None:
    lead = two_judges.evaluate_source_sync(SEED)["judge_pid"]  # alone: the lead judges it
    (helper,) = _children_of(lead)
    zygote = _parent_of(lead)
    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(two_judges.evaluate_source_sync, SLOW)  # to the lead
        deadline = time.monotonic() + 60
        while not [c for c in _children_of(zygote) if c != lead]:
            assert time.monotonic() < deadline, "the first child never started"
            time.sleep(0.05)
        second = ex.submit(two_judges.evaluate_source_sync, SLOW)  # to the helper: the lead is busy
        while len([c for c in _children_of(zygote) if c != lead]) < 2:  # both handed over (before the fork)
            assert time.monotonic() < deadline, "the second child never started"
            time.sleep(0.05)
        os.kill(helper, signal.SIGKILL)
        reports = [first.result(timeout=300), second.result(timeout=300)]
    assert reports[0]["passed"], reports[0].get("error")
    assert not reports[1].get("passed") and "the helper judge judging it exited" in str(reports[1].get("error"))
    after = two_judges.evaluate_source_sync(SEED)  # the lead goes on alone
    assert after["passed"] and after["judge_pid"] == lead, after.get("error")


def test_two_tasks_prepared_at_once_are_held_by_every_judge(tmp_path: Path) -> None:
    """Two reference jobs at once: each task is shared with the helper in turn (an ack answers its own share),
    so the helper holds both and judges either task's children."""
    pool = WorkerPool(tmp_path, ["cpu"], parallel_per_device=4, checking_slots=4, judges=2)
    config = BenchConfig(iters=2, warmup=1, compile_baseline=False)
    pair = [KernelEvaluator(load_task(f"kernels/{name}"), 1, tmp_path, config=config, pool=pool)
            for name in ("rmsnorm_fwd", "silu_fwd")]
    try:
        seeds = [(REPO / "kernels" / f"{e.task.name.split('/')[1]}.py").read_text() for e in pair]
        with ThreadPoolExecutor(4) as ex:
            futures = [ex.submit(e.evaluate_source_sync, seed) for e, seed in zip(pair * 2, seeds * 2, strict=True)]
            reports = [f.result(timeout=600) for f in futures]
        assert all(r["passed"] for r in reports), [r.get("error") for r in reports]
        assert len({r["judge_pid"] for r in reports}) == 2
    finally:
        for e in pair:
            e.close()
        pool.close()


def test_a_candidate_can_neither_stop_nor_read_its_judges(tmp_path: Path) -> None:
    """`tamper/stops_its_judges.py` finds the lead and its helper and signals them and opens their memory:
    Landlock's signal scope and the judges' non-dumpable state refuse both, and it is refused as wrong."""
    from evo.eval.fs_guard import landlock_abi

    if landlock_abi()[0] < 6:  # without the scope the stop would land: the defence is not there to test
        pytest.skip("Landlock ABI >= 6 (signal scope) is not available on this kernel")
    source = (REPO / "tests" / "redteam" / "tamper" / "stops_its_judges.py").read_text()
    pool = WorkerPool(tmp_path, ["cpu"], parallel_per_device=2, checking_slots=2, judges=2)  # a helper still up
    two_judges = KernelEvaluator(load_task("kernels/rmsnorm_fwd"), 1, tmp_path,
                                 config=BenchConfig(iters=2, warmup=1, compile_baseline=False), pool=pool)
    try:
        _refused_by_its_judges(two_judges, source)
    finally:
        two_judges.close()
        pool.close()


def _refused_by_its_judges(two_judges: KernelEvaluator, source: str) -> None:
    report = two_judges.evaluate_source_sync(source)
    assert not report["passed"] and report["error"].startswith("dynamic:precision"), report.get("error")
    said = next(line for line in report["log_tail"].splitlines() if line.startswith("judges:"))
    assert "stop refused" in said and "memory refused" in said and "stopped" not in said.replace(
        "stop refused", "") and "memory read" not in said, said
    assert said.count("stop refused") >= 2, said  # the lead and its helper, both found
    assert two_judges.evaluate_source_sync(SEED)["passed"]  # both still judging


def test_a_helper_that_never_holds_the_task_is_let_go_and_the_lead_judges(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper stopped before the task is shared (SIGSTOP: a hang of its own) never says it holds it. The
    reference child holds the GPU alone until it does, so the lead lets it go after its wait and judges alone;
    before, the lead waited for it forever, and every evaluation with it."""
    monkeypatch.setenv("EVO_JUDGE_SHARE_TIMEOUT_S", "3")
    monkeypatch.setenv("EVO_LOCK_DIR", str(tmp_path / "locks"))  # a lead that waited would hold no one else's GPU
    pool = WorkerPool(tmp_path, ["cpu"], parallel_per_device=2, checking_slots=2, judges=2)
    ev = KernelEvaluator(load_task("kernels/rmsnorm_fwd"), 1, tmp_path,
                         config=BenchConfig(iters=2, warmup=1, compile_baseline=False), pool=pool)
    try:
        worker = pool.workers[0].proc.pid
        (lead,) = [c for c in _children_of(worker) if b"judge_process" in (Path("/proc") / str(c) / "cmdline").read_bytes()]
        deadline = time.monotonic() + 60
        while not _children_of(lead):  # the lead starts its helper once it has imported torch
            assert time.monotonic() < deadline, "the lead started no helper"
            time.sleep(0.05)
        (helper,) = _children_of(lead)
        os.kill(helper, signal.SIGSTOP)
        with ThreadPoolExecutor(1) as ex:
            report = ex.submit(ev.evaluate_source_sync, SEED).result(timeout=120)
        assert report["status"] == "ok" and report["passed"] and report["judge_pid"] == lead, report.get("error")
        assert helper not in _children_of(lead)  # killed, and reaped by the lead
        log = next(tmp_path.glob("session-*/judge-cpu.log")).read_text()
        assert "helper judge 1 could not hold the task: it did not hold the task within 3 s" in log, log
    finally:
        ev.close()
        pool.close()
