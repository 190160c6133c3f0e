"""RMSNorm forward that retries with a smaller configuration when the big one runs out of resources.

The handler launches the Triton kernel again (a retry, not a fallback to torch), and anything else raises.
"""

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources


@triton.jit
def _rmsnorm_kernel(x_ptr, w_ptr, y_ptr, T, D, stride, eps, BLOCK_D: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < T) & (cols[None, :] < D)
    offs = rows[:, None] * stride + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, (x * rstd[:, None] * w[None, :]).to(y_ptr.dtype.element_ty), mask=mask)


def launch(x, weight, y, rows):
    T, D = x.shape
    _rmsnorm_kernel[(triton.cdiv(T, rows),)](x, weight, y, T, D, x.stride(0), 1e-5,
                                             BLOCK_D=triton.next_power_of_2(D), ROWS=rows, num_warps=8)


def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    try:
        launch(x, weight, y, rows=4)
    except OutOfResources:
        launch(x, weight, y, rows=1)
    return y
