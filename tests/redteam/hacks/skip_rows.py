"""expect: dynamic:full_coverage
Skipped rows: normalises only the first 99% of the rows, betting on a 99% matched-ratio tolerance.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_kernel(x_ptr, w_ptr, y_ptr, D, stride, eps, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / D + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


def run(x, weight):
    T, D = x.shape
    y = torch.empty_like(x)
    done = T - T // 100
    _rms_kernel[(done,)](x, weight, y, D, x.stride(0), 1e-5, BLOCK_D=triton.next_power_of_2(D))
    return y
