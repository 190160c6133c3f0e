"""expect: side_streams
Side-stream escape: launches the kernel on a fresh CUDA stream and returns without joining it, so the
harness's events on the current stream time nothing.
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


def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    T, D = x.shape
    y = torch.empty_like(x)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        _rms_kernel[(T,)](x, weight, y, D, x.stride(0), 1e-5, BLOCK_D=triton.next_power_of_2(D))
    return y  # no side.synchronize(): the comparison later waits on the device anyway
