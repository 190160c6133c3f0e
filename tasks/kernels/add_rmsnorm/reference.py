"""Residual add + RMSNorm, as at every sublayer boundary of a Llama-family block (vLLM's fused_add_rms_norm).

h = x + residual (rounded to the residual stream's dtype), y = h / sqrt(mean(h^2) + eps) * weight.
Returns (y, h): the normed input of the next sublayer and the updated residual stream.
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Stress, Workload

EPS = 1e-5

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 4096, "D": 4096}, "Llama-3-8B: hidden 4096, 4096-token prefill"),
        Workload("qwen2_5_7b_prefill", {"T": 2048, "D": 3584}, "Qwen2.5-7B: hidden 3584"),
        Workload("llama3_70b_decode", {"T": 256, "D": 8192}, "Llama-3-70B: hidden 8192, batch-256 decode"),
        Workload("qwen2_5_7b_prime", {"T": 1021, "D": 3584}, "Qwen2.5-7B: hidden 3584, prime T", hidden=True),
        Workload("mistral_7b_odd_tokens", {"T": 3001, "D": 4096}, "Mistral-7B: hidden 4096, odd T", hidden=True),
    ),
    small=({"T": 7, "D": 96}, {"T": 33, "D": 200}),
    atol=2e-2,
    rtol=2e-2,
    notes="Both outputs bf16 (one rounding each). reference_error vs fp64: <=4.0e-3 relative to max |y| on CPU "
          "(T=64 with D=4096 and 8192, small shapes), <=5.0e-3 on H100 at every workload; tolerance ~4x that. "
          "The reference's own error uses <=1/3 of the tolerance on every workload.",
    # the reference's own error vs fp64 on scaled inputs: <=5.0e-3 relative, 0.29 of the tolerance
    stress=Stress(64.0, (0, 1)),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # The sublayer's output is modest; the residual stream is heavy-tailed with a few outlier channels.
    x = 0.5 * torch.randn(T, D, generator=g)
    residual = torch.randn(T, D, generator=g) * torch.exp(0.5 * torch.randn(T, 1, generator=g))
    residual = residual * (1.0 + 6.0 * (torch.rand(D, generator=g) > 0.99))
    weight = 1.0 + 0.2 * torch.randn(D, generator=g)
    return x.to(device, torch.bfloat16), residual.to(device, torch.bfloat16), weight.to(device, torch.bfloat16)


def run(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = x + residual
    acc = torch.promote_types(h.dtype, torch.float32)
    hf = h.to(acc)
    y = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + EPS) * weight.to(acc)
    return y.to(x.dtype), h


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 5.0 * T * D  # add, square, sum, scale by rstd, scale by weight


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 2.0 * (4 * T * D + D)  # read x, residual and weight, write y and h, bf16
