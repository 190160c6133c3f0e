"""SiLU forward in Triton: y = x * sigmoid(x), one program per BLOCK elements of the flattened tensor."""

import torch
import triton
import triton.language as tl

BLOCK = 1024  # evo: [256, 512, 1024, 2048, 4096, 8192]
NUM_WARPS = 4  # evo: [1, 2, 4, 8, 16]


@triton.jit
def _silu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = x / (1.0 + tl.exp(-x))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def run(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    _silu_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return y
