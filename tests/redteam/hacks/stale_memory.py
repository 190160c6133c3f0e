"""expect: dynamic:stale_memory
Stale-memory read: returns an uninitialised torch.empty buffer that the caching allocator hands back
with the reference's freshly freed output still in it (the Sakana "result reuse" hack).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _touch(y_ptr, n, BLOCK: tl.constexpr):
    # "prefetch" pass: reads nothing useful, writes nothing; only here so a kernel shows up in the profile
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.load(y_ptr + offs, mask=offs < n, other=0.0)


def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # The harness computed the reference just before this call and freed it: the allocator returns the same
    # block for a request of the same size, so `y` already holds the right answer.
    y = torch.empty_like(x)
    _touch[(1,)](y, 1, BLOCK=16)
    return y
