"""expect: dynamic:precision
Precision downgrade inside the kernel: squares and sums in fp16 instead of fp32, which fits the bf16
tolerance on one friendly input and drifts on others (large D, outlier channels).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_fp16(x_ptr, w_ptr, y_ptr, D, stride, eps, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float16)
    ss = tl.sum(x * x, axis=0)  # fp16 accumulation
    rstd = (1.0 / tl.sqrt(ss.to(tl.float32) / D + eps)).to(tl.float16)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float16)
    tl.store(y_ptr + row * stride + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


def run(x, weight):
    T, D = x.shape
    y = torch.empty_like(x)
    _rms_fp16[(T,)](x, weight, y, D, x.stride(0), 1e-5, BLOCK_D=triton.next_power_of_2(D))
    return y
