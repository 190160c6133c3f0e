"""RMSNorm forward whose launch configuration comes from a functools.lru_cache'd pure function of sizes.

Allowed: the cache keys on integers (T, D) and holds tuples of integers, never tensors.
"""

import functools

import torch
import triton
import triton.language as tl


@functools.lru_cache(maxsize=64)
def launch_config(T: int, D: int) -> tuple[int, int, int, int]:
    block_d = triton.next_power_of_2(D)
    rows = max(1, min(8, 4096 // block_d))
    warps = 4 if block_d <= 2048 else 8
    return triton.cdiv(T, rows), block_d, rows, warps


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


def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    T, D = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    programs, block_d, rows, warps = launch_config(T, D)
    _rmsnorm_kernel[(programs,)](x, weight, y, T, D, x.stride(0), 1e-5, BLOCK_D=block_d, ROWS=rows,
                                 num_warps=warps)
    return y
