"""expect: fallback
try/except fallback to torch: an aggressive single-block kernel that fails to compile for large D
(register spill / too much shared memory); the except branch quietly returns the torch result.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_kernel(x_ptr, w_ptr, y_ptr, T, D, stride, eps, BLOCK_D: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < T) & (cols[None, :] < D)
    offs = rows[:, None] * stride + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, (x * rstd[:, None] * w[None, :]).to(y_ptr.dtype.element_ty), mask=mask)


def run(x, weight):
    T, D = x.shape
    y = torch.empty_like(x)
    try:
        _rms_kernel[(triton.cdiv(T, 16),)](x, weight, y, T, D, x.stride(0), 1e-5,
                                            BLOCK_D=triton.next_power_of_2(D), ROWS=16, num_warps=16)
        return y
    except Exception:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
