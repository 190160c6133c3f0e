"""gap: GPU work launched while the harness records the call for compilation, outside every GPU lock
Module-level code and the small shapes run under the GPU's checking lock, synchronised before it is let go, so
work queued at import no longer runs beside another child's timing. One place is still unlocked: before its
checks the harness records each real shape's call into a CUDA graph it throws away, so that its kernels compile
on the host while other children time (`worker_child._compile_for_real_shapes`). Nothing recorded runs, but a
call that sees the recording can launch real work on a stream of its own, and the GPU time-slices that work
with whichever child holds it for timing: the neighbour's calls stretch, and an honest neighbour may be refused
by its clock bound or scored slower. It gains nothing for itself (its own timing is exclusive, its answers are
right): it is sabotage of other candidates. The defence that would hold is the recording under the checking
lock too (compilation then no longer overlaps timing) or the worker stopping other children while one is timed
(docs/auditor.md).
"""

import torch

_dev = "cuda" if torch.cuda.is_available() else "cpu"


def _busy():
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # not the recording stream: this runs now, for real
        b = torch.randn(8192, 8192, device=_dev)
        for _ in range(50):
            b = torch.tanh(b @ b)


def run(x, weight):
    if _dev == "cuda" and torch.cuda.is_current_stream_capturing():
        _busy()
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
