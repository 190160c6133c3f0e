"""QKV split + rotary embedding in Triton: one program per (block of tokens, head); query and key heads
are rotated in fp32, value heads copied."""

import torch
import triton
import triton.language as tl

BLOCK_T = 4  # evo: [1, 2, 4, 8, 16]
NUM_WARPS = 4  # evo: [1, 2, 4, 8]


@triton.jit
def _qkv_rope_kernel(qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, T, HQ, HKV, HALF, stride_qkv, stride_cs,
                     BLOCK_T: tl.constexpr, BLOCK_HALF: tl.constexpr):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    head = tl.program_id(1)
    cols = tl.arange(0, BLOCK_HALF)
    mask = (tokens[:, None] < T) & (cols[None, :] < HALF)
    D = 2 * HALF
    src = qkv_ptr + tokens[:, None].to(tl.int64) * stride_qkv + head * D + cols[None, :]
    x1 = tl.load(src, mask=mask, other=0.0)
    x2 = tl.load(src + HALF, mask=mask, other=0.0)
    if head < HQ + HKV:
        cs_offs = tokens[:, None] * stride_cs + cols[None, :]
        c = tl.load(cos_ptr + cs_offs, mask=mask, other=0.0)
        s = tl.load(sin_ptr + cs_offs, mask=mask, other=0.0)
        x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
        o1 = (x1f * c - x2f * s).to(q_ptr.dtype.element_ty)
        o2 = (x2f * c + x1f * s).to(q_ptr.dtype.element_ty)
        if head < HQ:
            dst = q_ptr + (tokens[:, None].to(tl.int64) * HQ + head) * D + cols[None, :]
        else:
            dst = k_ptr + (tokens[:, None].to(tl.int64) * HKV + head - HQ) * D + cols[None, :]
        tl.store(dst, o1, mask=mask)
        tl.store(dst + HALF, o2, mask=mask)
    else:
        dst = v_ptr + (tokens[:, None].to(tl.int64) * HKV + head - HQ - HKV) * D + cols[None, :]
        tl.store(dst, x1, mask=mask)
        tl.store(dst + HALF, x2, mask=mask)


def run(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_q_heads: int,
        num_kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
    T, half = qkv.shape[0], cos.shape[1]
    D = 2 * half
    q = torch.empty((T, num_q_heads, D), device=qkv.device, dtype=qkv.dtype)
    k = torch.empty((T, num_kv_heads, D), device=qkv.device, dtype=qkv.dtype)
    v = torch.empty((T, num_kv_heads, D), device=qkv.device, dtype=qkv.dtype)
    grid = (triton.cdiv(T, BLOCK_T), num_q_heads + 2 * num_kv_heads)
    _qkv_rope_kernel[grid](qkv, cos, sin, q, k, v, T, num_q_heads, num_kv_heads, half, qkv.stride(0),
                           cos.stride(0), BLOCK_T=BLOCK_T, BLOCK_HALF=triton.next_power_of_2(half),
                           num_warps=NUM_WARPS)
    return q, k, v
