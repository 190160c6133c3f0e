"""Several judge processes per worker (`evo/eval/judge_process.py`): the lead's helpers judge children as the
lead does, on the CPU (Triton's interpreter)."""

from __future__ import annotations

import os
import signal
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
    # Three children at once, two judges: each judged at least one (the lead takes the first, a helper the next).
    assert len({r["judge_pid"] for r in reports}) == 2, [r["judge_pid"] for r in reports]
    # The reference job's expected outputs were read by both judges, then deleted.
    assert not [p for p in Path(two_judges.pool.session).rglob("*") if p.is_file() and "expected" in p.name]


def test_a_helper_that_dies_costs_only_the_child_it_was_judging(two_judges: KernelEvaluator) -> None:
    lead_pid = two_judges.evaluate_source_sync(SEED)["judge_pid"]  # alone: the lead judges it
    (helper,) = _children_of(lead_pid)
    os.kill(helper, signal.SIGKILL)
    with ThreadPoolExecutor(2) as ex:  # one of two goes to the dead helper's place, or both to the lead
        reports = list(ex.map(two_judges.evaluate_source_sync, [SEED, SEED]))
    for r in reports:
        assert r.get("passed") or "the helper judge judging it exited" in str(r.get("error")), r.get("error")
    after = two_judges.evaluate_source_sync(SEED)
    assert after["passed"] and after["judge_pid"] == lead_pid, after.get("error")
