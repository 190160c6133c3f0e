"""Attention output projection + residual add, the end of every Llama-family attention sublayer.

y = residual + attn @ wo^T, attn (T, K) with K = heads * head_dim, wo (N, K) as stored by nn.Linear
(no bias), residual (T, N).
"""

import torch
import torch.nn.functional as F

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 4096, "K": 4096, "N": 4096},
                 "Llama-3-8B: 32 heads x 128 -> hidden 4096, 4096-token prefill"),
        Workload("llama3_70b_prefill", {"T": 2048, "K": 8192, "N": 8192},
                 "Llama-3-70B: 64 heads x 128 -> hidden 8192"),
        Workload("qwen2_5_7b_prefill", {"T": 4096, "K": 3584, "N": 3584},
                 "Qwen2.5-7B: 28 heads x 128 -> hidden 3584"),
        Workload("qwen2_5_7b_prime", {"T": 1021, "K": 3584, "N": 3584}, "Qwen2.5-7B: hidden 3584, prime T",
                 hidden=True),
        Workload("mistral_7b_odd_tokens", {"T": 3001, "K": 4096, "N": 4096}, "Mistral-7B: hidden 4096, odd T",
                 hidden=True),
    ),
    small=({"T": 5, "K": 48, "N": 40}, {"T": 17, "K": 64, "N": 72}),
    atol=3e-2,
    rtol=2e-2,
    notes="Output bf16; the reference rounds the projection to bf16 before adding the residual (two roundings). "
          "reference_error vs fp64: <=3.3e-3 relative to max |y| (abs up to ~0.25 on residual outliers of ~120, "
          "covered by rtol) on CPU (T=64 with K=4096 and 8192, small shapes) and on H100 at every workload; "
          "tolerance ~4x, rounded up. The reference's own error uses <=0.26 of the tolerance.",
)


def _rows(g: torch.Generator, rows: int, cols: int, uniform: bool = False) -> torch.Tensor:
    """A (rows, cols) bf16 tensor of standard normals (or uniforms in [-1, 1)), drawn fast: each row is a
    randomly shifted window of one long random sequence (rows * cols draws on the CPU take seconds)."""
    pool = 2.0 * torch.rand(cols + 65521, generator=g) - 1.0 if uniform else torch.randn(cols + 65521, generator=g)
    offsets = torch.randint(0, 65522, (rows,), generator=g)
    return pool.to(torch.bfloat16).unfold(0, cols, 1)[offsets]


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, K, N = params["T"], params["K"], params["N"]
    # Attention outputs (convex combinations of values: modest), a heavy-tailed residual stream.
    attn = _rows(g, T, K).mul_((0.5 * (0.5 + torch.rand(K, generator=g))).to(torch.bfloat16))
    wo = _rows(g, N, K).mul_(K**-0.5)
    residual = _rows(g, T, N).mul_(torch.exp(0.5 * torch.randn(T, 1, generator=g)).to(torch.bfloat16))
    residual.mul_((1.0 + 6.0 * (torch.rand(N, generator=g) > 0.99)).to(torch.bfloat16))
    return attn.to(device), wo.to(device), residual.to(device)


def run(attn: torch.Tensor, wo: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    return residual + F.linear(attn, wo)


def flops(params: dict) -> float:
    T, K, N = params["T"], params["K"], params["N"]
    return 2.0 * T * N * K + T * N  # the GEMM, then the residual add


def min_bytes(params: dict) -> float:
    T, K, N = params["T"], params["K"], params["N"]
    return 2.0 * (T * K + N * K + 2 * T * N)  # read attn, wo and residual, write y, bf16
