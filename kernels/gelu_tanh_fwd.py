"""GELU (tanh approximation) in Triton, one program per BLOCK elements of the flattened tensor.

Uses 0.5 * (1 + tanh(u)) = sigmoid(2u), so y = x * sigmoid(2u) with u = sqrt(2/pi) * (x + 0.044715 x^3).
"""

import torch
import triton
import triton.language as tl

BLOCK = 1024  # evo: [256, 512, 1024, 2048, 4096, 8192]
NUM_WARPS = 4  # evo: [1, 2, 4, 8, 16]


@triton.jit
def _gelu_tanh_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    y = x / (1.0 + tl.exp(-2.0 * u))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def run(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    _gelu_tanh_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return y
