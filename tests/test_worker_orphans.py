"""A process that a kernel candidate detaches from its child (a double fork) does not outlive it.

The worker kills a child's process group when it is done with it; a process the candidate detached with a
double fork has left that group, and once its parent exited it was init's: it lived on, and could keep the GPU
or its lock (`evo/eval/lock_watch.py`). The worker now adopts such processes (PR_SET_CHILD_SUBREAPER) and kills
them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from evo.eval.backends.kernel import KernelEvaluator

REPO = Path(__file__).resolve().parents[1]
NAME = "evo-detached-t"

DETACHES = f'''
import ctypes as _ctypes
import os as _os
import time as _time

if _os.fork() == 0:
    _os.setsid()
    if _os.fork() == 0:  # the grandchild: no parent of the candidate's, no group of its child
        _ctypes.CDLL(None).prctl(15, b"{NAME}", 0, 0, 0)
        _time.sleep(600)
    _os._exit(0)
'''


def _named(name: str) -> list[int]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(int(comm.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_a_process_the_candidate_detaches_is_killed_by_the_worker(rmsnorm_harness: KernelEvaluator) -> None:
    honest = (REPO / "kernels" / "rmsnorm_fwd.py").read_text()
    try:
        report = rmsnorm_harness.evaluate_source_sync(DETACHES + honest)
        assert report["status"] in ("ok", "error"), report  # judged as it deserves; the point is what is left
        assert _named(NAME) == []
    finally:
        for pid in _named(NAME):  # never leave one behind, whatever the result
            os.kill(pid, signal.SIGKILL)
