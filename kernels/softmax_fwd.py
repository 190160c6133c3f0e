"""Softmax over the last dimension in Triton: one program per row, looping over the row in BLOCK_N chunks.

Pass 1 keeps a running max and a running sum of exp (rescaled when the max grows); pass 2 writes the output.
"""

import torch
import triton
import triton.language as tl

BLOCK_N = 1024  # evo: [256, 512, 1024, 2048, 4096, 8192]
NUM_WARPS = 4  # evo: [1, 2, 4, 8, 16]


@triton.jit
def _softmax_kernel(x_ptr, y_ptr, N, stride, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row, y_row = x_ptr + row * stride, y_ptr + row * stride
    cols = tl.arange(0, BLOCK_N)
    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, N, BLOCK_N):
        x = tl.load(x_row + start + cols, mask=start + cols < N, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        alpha = tl.where(m_new == float("-inf"), 0.0, tl.exp(m - m_new))
        s = s * alpha + tl.where(x == float("-inf"), 0.0, tl.exp(x - m_new))
        m = m_new
    m_row = tl.max(m, axis=0)
    total = tl.sum(s * tl.where(m == float("-inf"), 0.0, tl.exp(m - m_row)), axis=0)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        x = tl.load(x_row + start + cols, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - m_row) / total
        tl.store(y_row + start + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def run(x: torch.Tensor) -> torch.Tensor:
    R, N = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    _softmax_kernel[(R,)](x, y, N, x.stride(0), BLOCK_N=BLOCK_N, num_warps=NUM_WARPS)
    return y
