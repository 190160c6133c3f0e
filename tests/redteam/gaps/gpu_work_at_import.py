"""gap: GPU work at import, before the checking lock, beside another child's timing
The warm-up's small shapes run under the GPU's checking lock (8d75a5d), but that lock is taken in the candidate's
own process, after its module is imported: module-level code runs first and unlocked. On a GPU this one keeps the
device busy with matrix products while another child may hold it for timing; the GPU time-slices between the two
processes and the neighbour's calls stretch on the judge's clock, so an honest neighbour can be refused by the
clock floor. It gains nothing for itself (its own timing is exclusive, its answers are right): it is sabotage of
other candidates. The defence that would hold is the worker (trusted) holding the lock for the child from its
start, or stopping other children while one is timed (docs/auditor.md).
"""

import torch

_dev = "cuda" if torch.cuda.is_available() else "cpu"
_n = 8192 if _dev == "cuda" else 64
_busy = torch.randn(_n, _n, device=_dev)
for _ in range(50):
    _busy = torch.tanh(_busy @ _busy)


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
