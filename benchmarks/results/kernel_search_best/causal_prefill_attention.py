"""Causal attention forward in Triton, FlashAttention style: one program per (query block, batch x head),
streaming key/value blocks up to the diagonal with an online softmax."""

import math
import os

import torch
import triton
import triton.language as tl

BLOCK_M = 64  # evo: [32, 64, 128]
BLOCK_N = 64  # evo: [16, 32, 64, 128]
NUM_WARPS = 4  # evo: [4, 8]
NUM_STAGES = 2  # evo: [1, 2, 3]
# Triton's CPU interpreter multiplies bf16 bit patterns in tl.dot (triton#11584): upcast there only.
DOT_FP32 = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _attn_fwd(q_ptr, k_ptr, v_ptr, o_ptr, T, qk_scale, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_FP32: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    base = tl.program_id(1).to(tl.int64) * T * HEAD_DIM  # (batch, head) slice of a contiguous (B, H, T, d)
    q_ptr, k_ptr, v_ptr, o_ptr = q_ptr + base, k_ptr + base, v_ptr + base, o_ptr + base
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_m[:, None] < T, other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, tl.minimum(start_m + BLOCK_M, T), BLOCK_N):
        cols = start_n + offs_n
        kt = tl.load(k_ptr + cols[None, :] * HEAD_DIM + offs_d[:, None], mask=cols[None, :] < T, other=0.0)
        v = tl.load(v_ptr + cols[:, None] * HEAD_DIM + offs_d[None, :], mask=cols[:, None] < T, other=0.0)
        if DOT_FP32:
            kt, v = kt.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, kt) * qk_scale  # log2 domain: qk_scale includes log2(e)
        s = tl.where((offs_m[:, None] >= cols[None, :]) & (cols[None, :] < T), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    o = (acc / l_i[:, None]).to(o_ptr.dtype.element_ty)
    tl.store(o_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], o, mask=offs_m[:, None] < T)


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    B, H, T, d = q.shape
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = torch.empty_like(q)
    grid = (triton.cdiv(T, BLOCK_M), B * H)
    _attn_fwd[grid](q, k, v, o, T, 1.4426950408889634 / math.sqrt(d), HEAD_DIM=d, BLOCK_M=BLOCK_M,
                    BLOCK_N=BLOCK_N, DOT_FP32=DOT_FP32, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    return o
