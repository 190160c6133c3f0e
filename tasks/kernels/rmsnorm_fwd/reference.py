"""RMSNorm forward, as in every Llama-family block: y = x / sqrt(mean(x^2) + eps) * weight."""

import torch

from evo.eval.kernel_spec import KernelSpec, Stress, Workload

EPS = 1e-5

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 4096, "D": 4096}, "Llama-3-8B: hidden 4096, 4096-token prefill"),
        Workload("qwen2_5_7b_prefill", {"T": 2048, "D": 3584}, "Qwen2.5-7B: hidden 3584"),
        Workload("llama3_70b_decode", {"T": 64, "D": 8192}, "Llama-3-70B: hidden 8192, batch-64 decode"),
        Workload("mistral_7b_odd_tokens", {"T": 3001, "D": 4096}, "Mistral-7B: hidden 4096, prime-ish T", hidden=True),
        Workload("qwen2_5_7b_prime", {"T": 1021, "D": 3584}, "Qwen2.5-7B: hidden 3584, prime T", hidden=True),
    ),
    small=({"T": 7, "D": 96}, {"T": 33, "D": 200}),
    atol=2e-2,
    rtol=2e-2,
    notes="bf16 output: one ulp is 2^-8 relative; the reference's own error against fp64 is ~4e-3 relative.",
    # the reference's own error vs fp64 on scaled inputs: <=3.3e-3 relative, 0.17 of the tolerance
    stress=Stress(64.0, (0,)),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Activations with a few outlier channels, as in real residual streams.
    x = torch.randn(T, D, generator=g) * (1.0 + 4.0 * (torch.rand(D, generator=g) > 0.99))
    weight = 1.0 + 0.2 * torch.randn(D, generator=g)
    return x.to(device, torch.bfloat16), weight.to(device, torch.bfloat16)


def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)
    return (y * weight.float()).to(x.dtype)


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 4.0 * T * D  # square, sum, scale by rstd, scale by weight


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 2.0 * (2 * T * D + D)  # read x and weight once, write y once, bf16
