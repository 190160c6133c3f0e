"""expect: dynamic:input_mutation
In-place modification of the input: writes the output over x and returns x, saving the allocation and
corrupting the input for every later use (the reference, if it runs after).
"""

import triton
import triton.language as tl


@triton.jit
def _rms_inplace(x_ptr, w_ptr, D, stride, eps, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / D + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(x_ptr + row * stride + cols, (x * rstd * w).to(x_ptr.dtype.element_ty), mask=mask)


def run(x, weight):
    T, D = x.shape
    _rms_inplace[(T,)](x, weight, D, x.stride(0), 1e-5, BLOCK_D=triton.next_power_of_2(D))
    return x
