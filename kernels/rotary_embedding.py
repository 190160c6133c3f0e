"""Rotary embedding (rotate-half layout) in Triton: one program per token and BLOCK_H heads."""

import torch
import triton
import triton.language as tl

BLOCK_H = 4  # evo: [1, 2, 4, 8, 16, 32]
NUM_WARPS = 4  # evo: [1, 2, 4, 8]


@triton.jit
def _rope_kernel(q_ptr, cos_ptr, sin_ptr, out_ptr, H, HALF, stride_t, stride_h,
                 BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    j = tl.arange(0, BLOCK_HALF)
    mask = (heads[:, None] < H) & (j[None, :] < HALF)
    offs = t * stride_t + heads[:, None] * stride_h + j[None, :]
    q1 = tl.load(q_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    q2 = tl.load(q_ptr + offs + HALF, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + t * HALF + j, mask=j < HALF, other=0.0)[None, :]
    s = tl.load(sin_ptr + t * HALF + j, mask=j < HALF, other=0.0)[None, :]
    tl.store(out_ptr + offs, (q1 * c - q2 * s).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_ptr + offs + HALF, (q2 * c + q1 * s).to(out_ptr.dtype.element_ty), mask=mask)


def run(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    T, H, D = q.shape
    q, cos, sin = q.contiguous(), cos.contiguous(), sin.contiguous()
    out = torch.empty_like(q)
    grid = (T, triton.cdiv(H, BLOCK_H))
    _rope_kernel[grid](q, cos, sin, out, H, D // 2, q.stride(0), q.stride(1),
                       BLOCK_H=BLOCK_H, BLOCK_HALF=triton.next_power_of_2(D // 2), num_warps=NUM_WARPS)
    return out
