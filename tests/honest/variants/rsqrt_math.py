"""RMSNorm forward with tl.math.rsqrt and an explicitly allocated output (torch.empty)."""

import torch
import triton
import triton.language as tl

EPS = 1e-5
NUM_WARPS = 8  # evo: [2, 4, 8, 16]


@triton.jit
def _rmsnorm_rsqrt(x_ptr, w_ptr, y_ptr, D, x_stride, y_stride, eps, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean_sq = tl.sum(x * x, axis=0) / D
    rstd = tl.math.rsqrt(mean_sq + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * y_stride + cols, (x * rstd * w).to(tl.bfloat16), mask=mask)


def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    T, D = x.shape
    y = torch.empty((T, D), dtype=x.dtype, device=x.device)
    _rmsnorm_rsqrt[(T,)](x, weight, y, D, x.stride(0), y.stride(0), EPS,
                         BLOCK_D=triton.next_power_of_2(D), num_warps=NUM_WARPS)
    return y
