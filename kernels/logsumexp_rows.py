"""Log-sum-exp over each row in Triton: one program per row, looping over the row in BLOCK_V chunks.

Keeps a running max and a running sum of exp per lane (rescaled when the max grows), combined at the end.
"""

import torch
import triton
import triton.language as tl

BLOCK_V = 1024  # evo: [256, 512, 1024, 2048, 4096, 8192]
NUM_WARPS = 4  # evo: [1, 2, 4, 8, 16]


@triton.jit
def _logsumexp_kernel(x_ptr, out_ptr, V, stride, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_V)
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_V], tl.float32)
    for start in range(0, V, BLOCK_V):
        x = tl.load(x_ptr + row * stride + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        alpha = tl.where(m_new == float("-inf"), 0.0, tl.exp(m - m_new))
        s = s * alpha + tl.where(x == float("-inf"), 0.0, tl.exp(x - m_new))
        m = m_new
    m_row = tl.max(m, axis=0)
    total = tl.sum(s * tl.where(m == float("-inf"), 0.0, tl.exp(m - m_row)), axis=0)
    tl.store(out_ptr + row, m_row + tl.log(total))


def run(x: torch.Tensor) -> torch.Tensor:
    T, V = x.shape
    x = x.contiguous()
    out = torch.empty(T, dtype=torch.float32, device=x.device)
    _logsumexp_kernel[(T,)](x, out, V, x.stride(0), BLOCK_V=BLOCK_V, num_warps=NUM_WARPS)
    return out
