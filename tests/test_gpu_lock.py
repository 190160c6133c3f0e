"""The GPU lock between real processes: checkers share the GPU, a timer holds it alone and is not starved."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from evo.eval.gpu_lock import GpuLock

HOLD_S = 0.6


def _hold(path: str, slots: int, mode: str, delay: float, hold: float, out: mp.Queue) -> None:
    time.sleep(delay)
    lock = GpuLock(Path(path), slots)
    if mode == "until_exit":  # held through the process's end: "left" is just before it exits
        lock.hold_until_exit()
        entered = time.monotonic()
        time.sleep(hold)
        out.put((mode, delay, entered, time.monotonic()))
        return
    held = {"timing": lock.timing, "checking": lock.checking, "unslotted": lock.unslotted}[mode]
    with held():
        entered = time.monotonic()
        time.sleep(hold)
        left = time.monotonic()
    out.put((mode, delay, entered, left))


def _run(tmp_path: Path, slots: int, plan: list[tuple[str, float]]) -> dict[float, tuple[str, float, float]]:
    """Start one process per (mode, delay) of `plan`; their (mode, entered, left) by delay."""
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    path = tmp_path / "gpu-0.lock"
    GpuLock(path, slots)  # the files exist before anyone waits on them, as in the worker's zygote
    procs = [ctx.Process(target=_hold, args=(str(path), slots, mode, delay, HOLD_S, out)) for mode, delay in plan]
    for p in procs:
        p.start()
    got = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    return {delay: (mode, entered, left) for mode, delay, entered, left in got}


def _overlap(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def test_checkers_share_the_gpu(tmp_path: Path) -> None:
    held = _run(tmp_path, 4, [("checking", 0.0), ("checking", 0.15)])
    assert _overlap(held[0.0], held[0.15])


def test_a_timer_holds_the_gpu_alone(tmp_path: Path) -> None:
    held = _run(tmp_path, 4, [("checking", 0.0), ("timing", 0.15), ("timing", 0.3)])
    spans = list(held.values())
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            assert not _overlap(a, b), (a, b)


def test_a_waiting_timer_goes_before_later_checkers(tmp_path: Path) -> None:
    held = _run(tmp_path, 4, [("checking", 0.0), ("timing", 0.15), ("checking", 0.3)])
    first, timer, late = held[0.0], held[0.15], held[0.3]
    assert timer[1] >= first[2] - 0.01  # waited for the checker that was there
    assert late[1] >= timer[2] - 0.01  # the later checker did not slip in ahead of it


@pytest.mark.parametrize("slots", [1, 2])
def test_slots_bound_the_checkers_at_once(tmp_path: Path, slots: int) -> None:
    delays = [0.0, 0.05, 0.1]
    held = _run(tmp_path, slots, [("checking", d) for d in delays])
    spans = sorted(held.values(), key=lambda s: s[1])
    most = max(sum(1 for s in spans if s[1] <= t[1] < s[2]) for t in spans)
    assert most == slots


def test_unslotted_shares_with_checkers_takes_no_slot_and_never_meets_a_timer(tmp_path: Path) -> None:
    held = _run(tmp_path, 1, [("checking", 0.0), ("unslotted", 0.15), ("timing", 0.3), ("unslotted", 0.45)])
    assert _overlap(held[0.0], held[0.15])  # the one slot is the checker's: the driver's work and the judge's do not wait for it
    for other in (0.0, 0.15, 0.45):
        assert not _overlap(held[0.3], held[other]), (held[0.3], held[other])


def test_a_hold_until_exit_keeps_a_timer_out_until_the_process_is_gone(tmp_path: Path) -> None:
    held = _run(tmp_path, 4, [("until_exit", 0.0), ("timing", 0.15)])
    assert held[0.15][1] >= held[0.0][2]
