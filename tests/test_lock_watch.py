"""A candidate that takes the GPU lock and keeps it costs itself, not its neighbours (`evo/eval/lock_watch.py`).

The candidate kept until now as `tests/redteam/gaps/holds_the_gpu_lock.py`, made certain to win: a thread started at import
blocks until it holds the lock's file alone, then keeps it. Before the worker watched /proc/locks, an honest
neighbour started after it waited until the worker killed the candidate at its time limit, and was timed out
itself by then.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from evo.eval.backends.kernel import KernelEvaluator
from evo.eval.bench import BenchConfig
from evo.eval.gpu_lock import GpuLock
from evo.eval.lock_watch import PROC_LOCKS, LockWatch
from evo.task import load_task

REPO = Path(__file__).resolve().parents[1]
HOLD_LIMIT_S = 3
TIMEOUT_S = 45

KEEPS_THE_LOCK = '''
import fcntl as _fcntl
import gc as _gc
import os as _os
import threading as _threading


def _keep() -> None:
    # The harness's own lock object, found in memory: its file's path, wherever the worker put it.
    lock = next(o for o in _gc.get_objects() if type(o).__name__ == "GpuLock")
    fd = _os.open(lock.path, _os.O_RDONLY)
    _fcntl.flock(fd, _fcntl.LOCK_EX)  # waits for the harness's own holds to end, then keeps the GPU alone
    _threading.Event().wait()


_threading.Thread(target=_keep, daemon=True).start()
'''

# Kept, not run: the pair that defeats the watch today. Two candidates at once, each keeping one of the lock's
# files and waiting for the other's: each waits on another process, so neither is charged for holding, and both
# are excused their time limit. They are stopped only at four times it (`WALL_LIMITS` in evo/eval/worker.py),
# keeping every neighbour off the GPU meanwhile. Closing it needs the wait-for graph: a cycle of candidates is
# no wait. Each half of the pair (the other takes the gate first, then the lock's file):
COLLUDING_HALF = """
import fcntl as _fcntl
import gc as _gc
import os as _os
import threading as _threading


def _keep_and_wait() -> None:
    lock = next(o for o in _gc.get_objects() if type(o).__name__ == "GpuLock")
    _fcntl.flock(_os.open(lock.path, _os.O_RDONLY), _fcntl.LOCK_EX)  # the other half: lock.gate first
    _fcntl.flock(_os.open(lock.gate, _os.O_RDONLY), _fcntl.LOCK_EX)  # held by the other half: wait forever
    _threading.Event().wait()


_threading.Thread(target=_keep_and_wait, daemon=True).start()
"""

pytestmark = pytest.mark.skipif(not PROC_LOCKS.is_file(), reason="no /proc/locks: nothing is watched here")


def _kept_by_a_candidate(lock_dir: Path) -> bool:
    """The lock's file held alone by a process that also waits on it: the candidate's thread keeps it, and the
    harness of that same child waits (every other exclusive hold, a timing, is let go)."""
    key = next(f":{p.stat().st_ino} " for p in lock_dir.glob("gpu-*.lock"))
    lines = [line.split() for line in PROC_LOCKS.read_text().splitlines() if key in line]
    holders = {parts[4] for parts in lines if parts[1] != "->" and parts[3] == "WRITE"}
    return any(parts[1] == "->" and parts[5] in holders for parts in lines)


def test_a_candidate_keeping_the_gpu_lock_is_stopped_and_its_neighbour_passes(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    lock_dir = tmp_path / "locks"
    monkeypatch.setenv("EVO_LOCK_DIR", str(lock_dir))
    monkeypatch.setenv("EVO_GPU_HOLD_LIMIT_S", str(HOLD_LIMIT_S))
    root = tmp_path / "tasks" / "kernels" / "rmsnorm_short"
    shutil.copytree(REPO / "tasks" / "kernels" / "rmsnorm_fwd", root)
    toml = root / "task.toml"
    toml.write_text(re.sub(r"(?m)^timeout_s = \d+", f"timeout_s = {TIMEOUT_S}", toml.read_text()))
    honest = (REPO / "kernels" / "rmsnorm_fwd.py").read_text()
    ev = KernelEvaluator(load_task(str(root)), 2, tmp_path / "scratch", devices=["cpu"],
                         config=BenchConfig(iters=2, warmup=1, compile_baseline=False), parallel_per_device=2)
    try:
        reports: dict[str, dict] = {}
        rogue = threading.Thread(target=lambda: reports.update(rogue=ev.evaluate_source_sync(KEEPS_THE_LOCK + honest)))
        rogue.start()
        deadline = time.monotonic() + 240  # the reference job first, then the candidate's import
        while not (lock_dir.is_dir() and _kept_by_a_candidate(lock_dir)):
            assert rogue.is_alive() and time.monotonic() < deadline, reports
            time.sleep(0.05)  # no event to wait on: the kernel's table of flocks is the only witness
        started = time.monotonic()
        neighbour = ev.evaluate_source_sync(honest)
        waited = time.monotonic() - started
        rogue.join(timeout=120)
    finally:
        ev.close()
    assert neighbour["status"] == "ok" and neighbour["passed"], neighbour.get("error")
    assert waited < TIMEOUT_S  # it went on once the lock's keeper was stopped, long before that one's time limit
    assert reports["rogue"]["status"] == "timeout", reports["rogue"]
    assert "held the GPU's lock" in reports["rogue"]["error"] and f"limit is {HOLD_LIMIT_S} s" in reports["rogue"]["error"]


HOLDS_AND_WAITS_ON_ITSELF = """
import fcntl, os, sys, threading
fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX)
threading.Thread(target=fcntl.flock, args=(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX), daemon=True).start()
sys.stdin.read()
"""
WAITS = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_SH)"


def test_a_wait_on_another_process_is_excused_and_a_wait_on_ones_own_thread_is_not(tmp_path: Path) -> None:
    """The watch's bookkeeping, with two processes of this test as the children."""
    import subprocess
    import sys

    lock = GpuLock(tmp_path / "gpu-x.lock", slots=1)
    watch = LockWatch(lock, limit_s=1.5)
    keeper = subprocess.Popen([sys.executable, "-c", HOLDS_AND_WAITS_ON_ITSELF, str(lock.path)], stdin=subprocess.PIPE)
    others: list[subprocess.Popen[bytes]] = []
    try:
        key = f":{lock.path.stat().st_ino} "

        def entries(pid: int) -> list[str]:
            return [line for line in PROC_LOCKS.read_text().splitlines() if key in line and f" {pid} " in line]

        while len(entries(keeper.pid)) < 2:  # its hold, and its own thread's wait
            assert keeper.poll() is None
            time.sleep(0.01)  # no event to wait on: the kernel's table of flocks is the only witness
        waiter = subprocess.Popen([sys.executable, "-c", WAITS, str(lock.path)])
        others.append(waiter)
        while not entries(waiter.pid):
            assert waiter.poll() is None
            time.sleep(0.01)
        idle = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        others.append(idle)
        children = {keeper.pid, waiter.pid, idle.pid}
        watch.poll(children, 10.0)
        watch.poll(children, 12.0)
        assert watch.held_too_long(keeper.pid, 12.0) == pytest.approx(2.0)  # its own thread's wait excuses nothing
        assert watch.waited(keeper.pid) == 0.0
        assert watch.held_too_long(waiter.pid, 12.0) is None and watch.waited(waiter.pid) == pytest.approx(2.0)
        assert watch.waited(idle.pid) == 0.0  # it waits on no lock
        # A process that is no child (as the judge) waits on the keeper: every other child waits on it in turn.
        judge = subprocess.Popen([sys.executable, "-c", WAITS, str(lock.path)])
        others.append(judge)
        while not entries(judge.pid):
            assert judge.poll() is None
            time.sleep(0.01)
        watch.poll(children, 13.0)
        assert watch.waited(idle.pid) == pytest.approx(1.0) and watch.waited(keeper.pid) == 0.0
        assert watch.held_too_long(keeper.pid, 13.0) == pytest.approx(3.0)
        watch.forget(keeper.pid)
        assert watch.held_too_long(keeper.pid, 12.0) is None
    finally:
        for p in (keeper, *others):
            p.kill()
            p.wait()
