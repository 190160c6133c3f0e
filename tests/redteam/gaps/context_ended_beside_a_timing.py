"""gap: a child ends its CUDA context outside the GPU lock, beside another child's timing
The harness starts and ends each child's CUDA context under the GPU lock, shared with checkers and never beside a
timing (`worker_child._child_setup`, `GpuLock.hold_until_exit`), but that code runs in the candidate's own
process: this candidate reaches the lock's class (through torch's `sys.modules`) and makes the hold at exit
do nothing, so its context's memory is given back while a neighbour may be timing. It gains nothing for
itself (its own timing came before); at most a neighbour's calls stretch and count as the judge's clock's.
The same holds for GPU work launched while its compile is recorded (`gpu_work_at_import.py`). What would
stop both is the worker, not the child: stopping other children while one times. The screen refuses it.
"""

import torch

torch.sys.modules["evo.eval.gpu_lock"].GpuLock.hold_until_exit = lambda self: None


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
