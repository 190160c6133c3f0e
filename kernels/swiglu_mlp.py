"""SwiGLU MLP in Triton: a dual tiled matmul with silu(gate) * up fused into its epilogue writes the bf16
intermediate h, then a tiled matmul computes h @ w_down^T (both as in the Triton matmul tutorial)."""

import os

import torch
import triton
import triton.language as tl

BLOCK_M = 64  # evo: [32, 64, 128]
BLOCK_N = 64  # evo: [32, 64, 128, 256]
NUM_WARPS = 4  # evo: [2, 4, 8]
NUM_STAGES = 3  # evo: [2, 3, 4]
BLOCK_K = 32
# Triton's CPU interpreter multiplies bf16 bit patterns in tl.dot (triton#11584): upcast there only.
DOT_FP32 = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _gate_up_kernel(x_ptr, wg_ptr, wu_ptr, h_ptr, M, N, K, stride_xm, stride_wn, stride_hm,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
    w_offs = offs_n[None, :] * stride_wn + offs_k[:, None]  # (BLOCK_K, BLOCK_N) tiles of Wg^T and Wu^T
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < K - k), other=0.0)
        w_mask = (offs_n[None, :] < N) & (offs_k[:, None] < K - k)
        bg = tl.load(wg_ptr + w_offs, mask=w_mask, other=0.0)
        bu = tl.load(wu_ptr + w_offs, mask=w_mask, other=0.0)
        if DOT_FP32:
            a, bg, bu = a.to(tl.float32), bg.to(tl.float32), bu.to(tl.float32)
        acc_g = tl.dot(a, bg, acc_g)
        acc_u = tl.dot(a, bu, acc_u)
        x_ptrs += BLOCK_K
        w_offs += BLOCK_K
    h = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(h_ptr + offs_m[:, None] * stride_hm + offs_n[None, :], h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _down_kernel(h_ptr, w_ptr, y_ptr, M, N, K, stride_hm, stride_wn, stride_ym,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    h_ptrs = h_ptr + offs_m[:, None] * stride_hm + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]  # a (BLOCK_K, BLOCK_N) tile of Wd^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(h_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < K - k), other=0.0)
        b = tl.load(w_ptrs, mask=(offs_n[None, :] < N) & (offs_k[:, None] < K - k), other=0.0)
        if DOT_FP32:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc)
        h_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def run(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    x, w_gate, w_up, w_down = x.contiguous(), w_gate.contiguous(), w_up.contiguous(), w_down.contiguous()
    T, H = x.shape
    inter = w_gate.shape[0]
    h = torch.empty((T, inter), device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(T, BLOCK_M), triton.cdiv(inter, BLOCK_N))
    _gate_up_kernel[grid](x, w_gate, w_up, h, T, inter, H, x.stride(0), w_gate.stride(0), h.stride(0),
                          BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, DOT_FP32=DOT_FP32,
                          num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    y = torch.empty((T, H), device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(T, BLOCK_M), triton.cdiv(H, BLOCK_N))
    _down_kernel[grid](h, w_down, y, T, H, inter, h.stride(0), w_down.stride(0), y.stride(0),
                       BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, DOT_FP32=DOT_FP32,
                       num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    return y
