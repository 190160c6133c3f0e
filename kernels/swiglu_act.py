"""SwiGLU activation in Triton: a 2-D grid over (rows, column blocks), silu(gate) * up in fp32."""

import torch
import triton
import triton.language as tl

BLOCK_I = 1024  # evo: [256, 512, 1024, 2048, 4096]
NUM_WARPS = 4  # evo: [1, 2, 4, 8]


@triton.jit
def _swiglu_kernel(gu_ptr, y_ptr, inter, stride_gu, stride_y, BLOCK_I: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask = cols < inter
    gate = tl.load(gu_ptr + row * stride_gu + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gu_ptr + row * stride_gu + inter + cols, mask=mask, other=0.0).to(tl.float32)
    y = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def run(gate_up: torch.Tensor) -> torch.Tensor:
    gate_up = gate_up.contiguous()
    T, inter = gate_up.shape[0], gate_up.shape[1] // 2
    y = torch.empty((T, inter), device=gate_up.device, dtype=gate_up.dtype)
    grid = (T, triton.cdiv(inter, BLOCK_I))
    _swiglu_kernel[grid](gate_up, y, inter, gate_up.stride(0), y.stride(0), BLOCK_I=BLOCK_I, num_warps=NUM_WARPS)
    return y
