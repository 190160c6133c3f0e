"""gap: a candidate takes the GPU lock itself and keeps it, stalling its neighbours
A thread started at import tries, every 10 ms, to take the GPU lock's file exclusively (flock, through computed
imports) and keeps it once it has it. Whoever then wants the GPU waits: other children, in their own time
limits, and the judge's comparisons (`GpuLock.for_the_judge`), until the worker kills this child at its time
limit and the lock goes with it. It gains nothing for itself; it can cost honest neighbours their evaluation.

Not run as a test: as written it is refused by the thread-count evidence (forgeable: `forged_evidence.py`),
and on the CPU it did not win the lock (the harness's holders leave it no gap), so whether a version that
forges its report stalls anyone is a race. Kept as the candidate to defeat when a child's lock holding is
watched from outside (the worker reading /proc/locks, its deadline not charged for waits on a lock another
child held). The screen refuses it.
"""

import builtins
import threading

import torch

_fcntl = builtins.__import__("fcn" + "tl")
_glob = builtins.__import__("gl" + "ob")
_os = builtins.__import__("o" + "s")


def _hold() -> None:
    held = []
    while not held:
        for path in _glob.glob("/tmp/evo-gpu-locks/gpu-*.lock"):
            fd = _os.open(path, _os.O_RDONLY)
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
                held.append(fd)
            except OSError:
                _os.close(fd)
        threading.Event().wait(0.01)
    threading.Event().wait()  # kept until the process dies


threading.Thread(target=_hold, daemon=True).start()


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
