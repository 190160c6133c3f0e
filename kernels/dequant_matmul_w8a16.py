"""W8A16 linear in Triton: a tiled matmul whose int8 weight tiles are converted to bf16 in registers;
the per-channel scale is applied once, after the K loop."""

import os

import torch
import triton
import triton.language as tl

BLOCK_M = 32  # evo: [16, 32, 64, 128]
BLOCK_N = 64  # evo: [32, 64, 128, 256]
BLOCK_K = 64  # evo: [32, 64, 128]
NUM_WARPS = 4  # evo: [2, 4, 8]
# Triton's CPU interpreter multiplies bf16 bit patterns in tl.dot (triton#11584): upcast there only.
DOT_FP32 = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _w8a16_kernel(x_ptr, w_ptr, s_ptr, y_ptr, T, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        x_mask = (rows[:, None] < T) & (k[None, :] < K)
        x = tl.load(x_ptr + rows[:, None] * K + k[None, :], mask=x_mask, other=0.0)
        # W is (N, K) row-major: load the transposed tile (BLOCK_K, BLOCK_N); int8 -> bf16 is exact
        w_mask = (cols[None, :] < N) & (k[:, None] < K)
        w = tl.load(w_ptr + cols[None, :] * K + k[:, None], mask=w_mask, other=0)
        if DOT_FP32:
            acc = tl.dot(x.to(tl.float32), w.to(tl.float32), acc)
        else:
            acc = tl.dot(x, w.to(tl.bfloat16), acc)
    y = acc * tl.load(s_ptr + cols, mask=cols < N, other=0.0)[None, :]
    mask = (rows[:, None] < T) & (cols[None, :] < N)
    tl.store(y_ptr + rows[:, None] * N + cols[None, :], y.to(tl.bfloat16), mask=mask)


def run(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    T, K = x.shape
    N = w.shape[0]
    x, w = x.contiguous(), w.contiguous()
    y = torch.empty((T, N), dtype=torch.bfloat16, device=x.device)
    grid = (triton.cdiv(T, BLOCK_M), triton.cdiv(N, BLOCK_N))
    _w8a16_kernel[grid](x, w, scale, y, T, N, K, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                        DOT_FP32=DOT_FP32, num_warps=NUM_WARPS)
    return y
