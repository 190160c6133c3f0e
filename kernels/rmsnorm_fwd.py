"""RMSNorm forward in Triton: one program per row, the whole row in one block."""

import torch
import triton
import triton.language as tl

BLOCK_ROWS = 1  # evo: [1, 2, 4, 8]
NUM_WARPS = 4  # evo: [1, 2, 4, 8, 16]


@triton.jit
def _rmsnorm_kernel(x_ptr, w_ptr, y_ptr, T, D, stride, eps, BLOCK_D: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < T) & (cols[None, :] < D)
    offs = rows[:, None] * stride + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    T, D = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    grid = (triton.cdiv(T, BLOCK_ROWS),)
    _rmsnorm_kernel[grid](x, weight, y, T, D, x.stride(0), 1e-5,
                          BLOCK_D=triton.next_power_of_2(D), BLOCK_ROWS=BLOCK_ROWS, num_warps=NUM_WARPS)
    return y
