"""Residual add + LayerNorm, as at every sublayer boundary of a GPT-J / Falcon / Phi-2 / StarCoder2 block.

h = x + residual (rounded to the residual stream's dtype), y = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias.
Returns (y, h): the normed input of the next sublayer and the updated residual stream.
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Stress, Workload

EPS = 1e-5

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("gpt_j_6b_prefill", {"T": 4096, "D": 4096}, "GPT-J-6B: hidden 4096, 4096-token prefill"),
        Workload("phi_2_prefill", {"T": 2048, "D": 2560}, "Phi-2: hidden 2560"),
        Workload("gpt_neox_20b_prefill", {"T": 2048, "D": 6144}, "GPT-NeoX-20B: hidden 6144"),
        Workload("falcon_7b_prime", {"T": 1021, "D": 4544}, "Falcon-7B: hidden 4544, prime T", hidden=True),
        Workload("starcoder2_7b_odd_tokens", {"T": 3001, "D": 4608}, "StarCoder2-7B: hidden 4608, odd T",
                 hidden=True),
    ),
    small=({"T": 7, "D": 96}, {"T": 33, "D": 200}),
    atol=2e-2,
    rtol=2e-2,
    notes="Both outputs bf16 (one rounding each). reference_error vs fp64: <=4.4e-3 relative to max |y| on CPU "
          "(T=64 with D=4544 and 6144, small shapes), <=4.5e-3 on H100 at every workload; tolerance ~4x that. "
          "The reference's own error uses <=1/3 of the tolerance on every workload.",
    # the reference's own error vs fp64 on scaled inputs: <=4.4e-3 relative, 0.31 of the tolerance
    stress=Stress(64.0, (0, 1)),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # The sublayer's output is modest; the residual stream is heavy-tailed, offset, with outlier channels.
    x = 0.5 * torch.randn(T, D, generator=g)
    residual = torch.randn(T, D, generator=g) * torch.exp(0.5 * torch.randn(T, 1, generator=g))
    residual = residual * (1.0 + 6.0 * (torch.rand(D, generator=g) > 0.99)) + 0.3 * torch.randn(D, generator=g)
    weight = 1.0 + 0.2 * torch.randn(D, generator=g)
    bias = 0.1 * torch.randn(D, generator=g)
    return tuple(t.to(device, torch.bfloat16) for t in (x, residual, weight, bias))


def run(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
        bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = x + residual
    acc = torch.promote_types(h.dtype, torch.float32)
    y = torch.nn.functional.layer_norm(h.to(acc), (h.shape[-1],), weight.to(acc), bias.to(acc), EPS)
    return y.to(x.dtype), h


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 8.0 * T * D  # add, mean, centre, square, sum, scale by rstd, weight, bias


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 2.0 * (4 * T * D + 2 * D)  # read x, residual, weight and bias, write y and h, bf16
