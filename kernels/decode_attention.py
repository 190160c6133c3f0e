"""Grouped-query decode attention in Triton: one program per (sequence, query head), streaming the valid
part of its key/value head's cache in blocks with an online softmax."""

import math

import torch
import triton
import triton.language as tl

BLOCK_N = 64  # evo: [16, 32, 64, 128, 256]
NUM_WARPS = 4  # evo: [1, 2, 4, 8]


@triton.jit
def _decode_kernel(q_ptr, k_ptr, v_ptr, len_ptr, o_ptr, H, H_KV, S, qk_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    length = tl.load(len_ptr + b)
    kv_base = (b * H_KV + h // (H // H_KV)).to(tl.int64) * S * HEAD_DIM
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + (b * H + h) * HEAD_DIM + offs_d).to(tl.float32)
    m_i = -float("inf")
    l_i = 0.0
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, length, BLOCK_N):
        cols = start_n + offs_n
        mask = cols < length
        offs = kv_base + cols[:, None] * HEAD_DIM + offs_d[None, :]
        k = tl.load(k_ptr + offs, mask=mask[:, None], other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :], axis=1) * qk_scale  # log2 domain: qk_scale includes log2(e)
        s = tl.where(mask, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        p = tl.exp2(s - m_new)
        alpha = tl.exp2(m_i - m_new)
        v = tl.load(v_ptr + offs, mask=mask[:, None], other=0.0).to(tl.float32)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m_i = m_new
    tl.store(o_ptr + (b * H + h) * HEAD_DIM + offs_d, (acc / l_i).to(o_ptr.dtype.element_ty))


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    B, H, d = q.shape
    H_KV, S = k.shape[1], k.shape[2]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = torch.empty_like(q)
    _decode_kernel[(B, H)](q, k, v, lengths, o, H, H_KV, S, 1.4426950408889634 / math.sqrt(d), HEAD_DIM=d,
                           BLOCK_N=BLOCK_N, num_warps=NUM_WARPS)
    return o
