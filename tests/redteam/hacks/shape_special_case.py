"""expect: dynamic:hidden_shapes
Shape special-case: a fast kernel that is only right when T is a multiple of 4 (every shown workload);
hidden shapes (T = 3001, 1021) leave the last rows unwritten.
"""

import torch
import triton
import triton.language as tl

ROWS = 4


@triton.jit
def _rms_rows(x_ptr, w_ptr, y_ptr, D, stride, eps, BLOCK_D: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = cols[None, :] < D  # no row mask: assumes T % ROWS == 0
    offs = rows[:, None] * stride + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, (x * rstd[:, None] * w[None, :]).to(y_ptr.dtype.element_ty), mask=mask)


def run(x, weight):
    T, D = x.shape
    y = torch.empty_like(x)
    _rms_rows[(T // ROWS,)](x, weight, y, D, x.stride(0), 1e-5, BLOCK_D=triton.next_power_of_2(D), ROWS=ROWS)
    return y
