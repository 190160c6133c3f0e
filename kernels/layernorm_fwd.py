"""LayerNorm forward in Triton: one program per block of rows, the whole row in one block."""

import torch
import triton
import triton.language as tl

BLOCK_ROWS = 1  # evo: [1, 2, 4, 8]
NUM_WARPS = 4  # evo: [1, 2, 4, 8, 16]


@triton.jit
def _layernorm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, T, D, stride, eps, BLOCK_D: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < T) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * stride + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    T, D = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    grid = (triton.cdiv(T, BLOCK_ROWS),)
    _layernorm_kernel[grid](x, weight, bias, y, T, D, x.stride(0), 1e-5,
                            BLOCK_D=triton.next_power_of_2(D), BLOCK_ROWS=BLOCK_ROWS, num_warps=NUM_WARPS)
    return y
