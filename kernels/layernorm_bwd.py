"""LayerNorm backward in Triton, two simple kernels.

1. dx: one program per row, the whole row in one block.
2. dweight, dbias: one program per BLOCK_COLS columns, looping down all T rows in BLOCK_T chunks.
"""

import torch
import triton
import triton.language as tl

BLOCK_COLS = 64  # evo: [16, 32, 64, 128, 256]
BLOCK_T = 32  # evo: [8, 16, 32, 64]
NUM_WARPS = 4  # evo: [1, 2, 4, 8, 16]


@triton.jit
def _dx_kernel(x_ptr, w_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, D, stride, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    xhat = tl.where(mask, (x - mean) * rstd, 0.0)
    g = w * dy
    c1 = tl.sum(g * xhat, axis=0) / D
    c2 = tl.sum(g, axis=0) / D
    dx = rstd * (g - c2 - xhat * c1)
    tl.store(dx_ptr + row * stride + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dwdb_kernel(x_ptr, dy_ptr, mean_ptr, rstd_ptr, dw_ptr, db_ptr, T, D, stride,
                 BLOCK_T: tl.constexpr, BLOCK_COLS: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    dw = tl.zeros([BLOCK_COLS], tl.float32)
    db = tl.zeros([BLOCK_COLS], tl.float32)
    for start in range(0, T, BLOCK_T):
        rows = start + tl.arange(0, BLOCK_T)
        mask = (rows[:, None] < T) & (cols[None, :] < D)
        offs = rows[:, None].to(tl.int64) * stride + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=rows < T, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=rows < T, other=0.0)
        xhat = (x - mean[:, None]) * rstd[:, None]
        dw += tl.sum(dy * xhat, axis=0)
        db += tl.sum(dy, axis=0)
    tl.store(dw_ptr + cols, dw.to(dw_ptr.dtype.element_ty), mask=cols < D)
    tl.store(db_ptr + cols, db.to(db_ptr.dtype.element_ty), mask=cols < D)


def run(x: torch.Tensor, weight: torch.Tensor, dy: torch.Tensor, mean: torch.Tensor,
        rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T, D = x.shape
    x, dy = x.contiguous(), dy.contiguous()
    dx = torch.empty_like(x)
    dweight, dbias = torch.empty_like(weight), torch.empty_like(weight)
    _dx_kernel[(T,)](x, weight, dy, mean, rstd, dx, D, x.stride(0),
                     BLOCK_D=triton.next_power_of_2(D), num_warps=NUM_WARPS)
    _dwdb_kernel[(triton.cdiv(D, BLOCK_COLS),)](x, dy, mean, rstd, dweight, dbias, T, D, x.stride(0),
                                                BLOCK_T=BLOCK_T, BLOCK_COLS=BLOCK_COLS, num_warps=NUM_WARPS)
    return dx, dweight, dbias
