"""Per-block (1x128) int8 dequantisation in Triton: one program per BLOCK_ROWS x BLOCK_D tile."""

import torch
import triton
import triton.language as tl

BLOCK_ROWS = 4  # evo: [1, 2, 4, 8, 16]
BLOCK_D = 512  # evo: [128, 256, 512, 1024]
NUM_WARPS = 4  # evo: [1, 2, 4, 8]


@triton.jit
def _dequant_kernel(q_ptr, s_ptr, y_ptr, T, D, n_groups, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < T) & (cols[None, :] < D)
    offs = rows[:, None] * D + cols[None, :]
    q = tl.load(q_ptr + offs, mask=mask, other=0).to(tl.float32)
    s = tl.load(s_ptr + rows[:, None] * n_groups + cols[None, :] // 128, mask=mask, other=0.0)
    tl.store(y_ptr + offs, (q * s).to(tl.bfloat16), mask=mask)


def run(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    T, D = q.shape
    q, scale = q.contiguous(), scale.contiguous()
    y = torch.empty((T, D), dtype=torch.bfloat16, device=q.device)
    grid = (triton.cdiv(T, BLOCK_ROWS), triton.cdiv(D, BLOCK_D))
    _dequant_kernel[grid](
        q, scale, y, T, D, scale.shape[1], BLOCK_ROWS=BLOCK_ROWS, BLOCK_D=BLOCK_D, num_warps=NUM_WARPS
    )
    return y
