"""Masked mean over the sequence in Triton: one program per (batch, BLOCK_H hidden columns), looping over the
sequence in BLOCK_T positions; the sum of the kept rows over max(count, 1).
"""

import torch
import triton
import triton.language as tl

BLOCK_T = 32  # evo: [8, 16, 32, 64, 128]
BLOCK_H = 128  # evo: [32, 64, 128, 256, 512]
NUM_WARPS = 4  # evo: [1, 2, 4, 8]


@triton.jit
def _masked_mean_kernel(x_ptr, m_ptr, y_ptr, T, H, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    hs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ts = tl.arange(0, BLOCK_T)
    acc = tl.zeros([BLOCK_H], tl.float32)
    count = tl.zeros([BLOCK_T], tl.float32)
    for start in range(0, T, BLOCK_T):
        t = start + ts
        m = tl.load(m_ptr + b * T + t, mask=t < T, other=0.0).to(tl.float32)
        ptrs = x_ptr + b * T * H + t[:, None] * H + hs[None, :]
        x = tl.load(ptrs, mask=(t[:, None] < T) & (hs[None, :] < H), other=0.0).to(tl.float32)
        acc += tl.sum(x * m[:, None], axis=0)
        count += m
    total = tl.maximum(tl.sum(count, axis=0), 1.0)
    tl.store(y_ptr + b * H + hs, (acc / total).to(y_ptr.dtype.element_ty), mask=hs < H)


def run(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    B, T, H = x.shape
    x, mask = x.contiguous(), mask.contiguous()
    y = torch.empty((B, H), dtype=x.dtype, device=x.device)
    _masked_mean_kernel[(B, triton.cdiv(H, BLOCK_H))](x, mask, y, T, H, BLOCK_T=BLOCK_T, BLOCK_H=BLOCK_H,
                                                      num_warps=NUM_WARPS)
    return y
