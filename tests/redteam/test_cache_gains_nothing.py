"""A candidate that answers repeated inputs from a cache, or inputs found in its process ahead of time, gains
nothing from it (the judge's timing plan).

The timed calls' input sets are unseen before the timing (no correctness round uses them) and a workload is
timed over at most 2 x sets - 1 calls, so repeats are fewer than half the calls and the median is a call that
computed (`evo.eval.time_bound.timed_calls`). The candidate here spends 40 ms on every input it has not seen, and
answers a repeat from its cache at once: the median it is scored by must be a 40 ms call. (Before this plan the
timing's 3 sets were those of the checks, 30 calls over them all came from the cache, and the same candidate
was scored by a copy's time.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evo.eval.backends.kernel import KernelEvaluator
from evo.eval.bench import BenchConfig
from evo.eval.reference_data import WorkloadData, draw_timing_plan
from evo.eval.time_bound import rechecked_calls, timed_calls
from evo.task import load_module, load_task

SLOW_S = 0.04

CACHING = f'''
import time
import torch

_cache = {{}}


def run(x, weight):
    key = (tuple(x.shape), float(x.view(-1)[0]), float(x.view(-1)[-1]), float(x.sum()))
    hit = _cache.get(key)
    if hit is None:
        start = time.perf_counter()
        while time.perf_counter() - start < {SLOW_S}:
            pass
        xf = x.float()
        hit = _cache[key] = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    return hit.clone()
'''


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelEvaluator]:
    config = BenchConfig(iters=30, warmup=1, compile_baseline=False)  # the default plan: repeats in the timing
    assert timed_calls(config) > config.input_sets
    ev = KernelEvaluator(load_task("kernels/rmsnorm_fwd"), 1, tmp_path_factory.mktemp("cache"), devices=["cpu"],
                         config=config, parallel_per_device=1)
    yield ev
    ev.close()


def test_a_cache_of_answers_does_not_set_the_median(harness: KernelEvaluator) -> None:
    report = harness.evaluate_source_sync(CACHING)
    assert report["status"] == "ok" and report["passed"], report.get("checks")
    medians = {w["workload"]: w["time_s"] for w in report["workloads"]}
    assert medians and all(t is not None and t >= 0.9 * SLOW_S for t in medians.values()), medians


def test_the_plan_keeps_repeats_under_half_whatever_the_settings() -> None:
    for sets in range(1, 9):
        for iters in range(1, 40):
            n = timed_calls(BenchConfig(iters=iters, input_sets=sets))
            repeats = max(0, n - sets)  # calls i >= sets use set i % sets again
            assert n >= 1 and 2 * repeats < n, (sets, iters, n)


def test_timing_inputs_are_the_judges_secret_and_never_a_correctness_rounds() -> None:
    task = load_task("kernels/rmsnorm_fwd")
    data = WorkloadData(load_module(task.reference_path, "ref_cache_test"), "cpu", 7, BenchConfig())
    assert data.timing_seeds == {} and data.masked == {}  # the zygote's: the timing's sets are not in it
    plan = draw_timing_plan(data.workloads, BenchConfig(), data.seeds)
    again = draw_timing_plan(data.workloads, BenchConfig(), data.seeds)
    for w in data.workloads:
        seeds = [seed for seed, _ in plan[w.name]]
        keys = [key for _, key in plan[w.name]]
        assert len(set(seeds)) == BenchConfig().input_sets and not set(seeds) & set(data.seeds[w.name])
        assert len(set(keys)) == len(keys) and all(0 < k < 2**63 for k in keys)
        assert plan[w.name] != again[w.name]  # drawn per reference job, not derived from the session's seed


# Answers made ahead: at import the candidate finds every input its process holds (the zygote's WorkloadData,
# reached through the garbage collector) and computes their answers; an input it has no answer for costs it
# SLOW_S. Before the timing's sets were masked (evo/eval/masked.py) they were among what it found, and its
# timed calls were copies.
AHEAD = f'''
import sys
import time
import torch

_ahead = {{}}


def _key(x):
    return (tuple(x.shape), float(x.reshape(-1)[0]), float(x.reshape(-1)[-1]), float(x.float().sum()))


def _rms(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


for _obj in __import__("g" + "c").get_objects():
    if type(_obj).__name__ == "WorkloadData":
        for _x, _w in _obj.inputs.values():
            _ahead[_key(_x)] = _rms(_x, _w)
        for _sets in _obj.masked.values():
            for _set in _sets:
                _ahead[("masked", id(_set))] = _set  # nothing to compute from: the bits are masked


def run(x, weight):
    hit = _ahead.get(_key(x))
    if hit is not None:
        return hit.clone()
    frame, timed = sys._getframe(), False
    while frame is not None:
        timed = timed or frame.f_code.co_name == "_op_go"
        frame = frame.f_back
    if timed and MISS_RAISES:
        raise RuntimeError("a timed input not made ahead")
    start = time.perf_counter()
    while time.perf_counter() - start < {SLOW_S}:
        pass
    return _rms(x, weight)
'''


def test_answers_made_ahead_serve_no_timed_call(harness: KernelEvaluator) -> None:
    report = harness.evaluate_source_sync(AHEAD.replace("MISS_RAISES", "False"))
    assert report["status"] == "ok" and report["passed"], report.get("checks")
    medians = {w["workload"]: w["time_s"] for w in report["workloads"]}
    assert medians and all(t is not None and t >= 0.9 * SLOW_S for t in medians.values()), medians
    # Not a candidate that passes by computing everything slowly: its answers made ahead served the checks (had
    # they not, the checks' calls would have raised), and only the timed calls met inputs it had never seen.
    probe = harness.evaluate_source_sync(AHEAD.replace("MISS_RAISES", "True"))
    assert not probe.get("passed") and "a timed input not made ahead" in str(probe.get("checks")), probe.get("checks")


# Wrong on one timed call: the second input set it meets in a timing, answered with a cheap wrong kernel. Drawing
# two calls of seven to fetch would have let this through five times in seven; every first sight is fetched.
ONE_WRONG = '''
import sys
import torch

_seen = []


def run(x, weight):
    frame, timed = sys._getframe(), False
    while frame is not None:
        timed = timed or frame.f_code.co_name == "_op_go"
        frame = frame.f_back
    if timed:
        # bf16 values repeat: the first element alone named two sets alike one run in a few dozen
        key = (tuple(x.shape), float(x.reshape(-1)[0]), float(x.reshape(-1)[-1]), float(x.float().sum()))
        if key not in _seen:
            _seen.append(key)
        if _seen.index(key) == 1:
            return x * 1.0
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
'''


def test_a_wrong_answer_on_any_first_sight_of_a_timing_set_is_refused(harness: KernelEvaluator) -> None:
    report = harness.evaluate_source_sync(ONE_WRONG)
    assert not report.get("passed")
    failed = [c for c in report.get("checks", []) if not c[1]]
    assert failed and failed[0][0] == "dynamic:warmup_invariance" and "timed call 1" in failed[0][2], failed


def test_every_first_sight_is_rechecked_and_repeats_are_under_half() -> None:
    for sets in range(1, 9):
        for iters in range(1, 40):
            n = timed_calls(BenchConfig(iters=iters, input_sets=sets))
            picked = rechecked_calls(n, sets)
            assert sorted({i % sets for i in picked}) == list(range(min(n, sets)))
            assert 2 * (n - len(picked)) < n
