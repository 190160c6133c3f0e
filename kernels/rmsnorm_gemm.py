"""RMSNorm + projection in Triton: one pass for each row's rstd, then a tiled matmul that normalises the
x tiles as it loads them (the normed activations never go to memory)."""

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
def _rstd_kernel(x_ptr, rstd_ptr, K, stride, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    sq = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(0, K, BLOCK):
        x = tl.load(x_ptr + row * stride + k + cols, mask=k + cols < K, other=0.0).to(tl.float32)
        sq += x * x
    tl.store(rstd_ptr + row, 1.0 / tl.sqrt(tl.sum(sq, axis=0) / K + eps))


@triton.jit
def _norm_gemm_kernel(x_ptr, rstd_ptr, nw_ptr, w_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      DOT_FP32: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    rstd = tl.load(rstd_ptr + offs_m, mask=offs_m < M, other=0.0)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]  # a (BLOCK_K, BLOCK_N) tile of W^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < K - k), other=0.0)
        nw = tl.load(nw_ptr + k + offs_k, mask=offs_k < K - k, other=0.0).to(tl.float32)
        a = (x.to(tl.float32) * rstd[:, None] * nw[None, :]).to(w_ptr.dtype.element_ty)  # the norm's bf16 output
        b = tl.load(w_ptrs, mask=(offs_n[None, :] < N) & (offs_k[:, None] < K - k), other=0.0)
        if DOT_FP32:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def run(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x, weight = x.contiguous(), weight.contiguous()
    M, K = x.shape
    N = weight.shape[0]
    rstd = torch.empty((M,), device=x.device, dtype=torch.float32)
    _rstd_kernel[(M,)](x, rstd, K, x.stride(0), 1e-5, BLOCK=1024)
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N))
    _norm_gemm_kernel[grid](x, rstd, norm_weight, weight, y, M, N, K, x.stride(0), weight.stride(0), y.stride(0),
                            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, DOT_FP32=DOT_FP32,
                            num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    return y
