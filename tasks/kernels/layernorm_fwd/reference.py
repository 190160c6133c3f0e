"""LayerNorm forward with weight and bias, as in GPT-NeoX / Falcon / Phi-2 / GPT-2 blocks.

y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the last dimension (biased variance).
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Stress, Workload

EPS = 1e-5

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("falcon_7b_prefill", {"T": 4096, "D": 4544}, "Falcon-7B: hidden 4544, 4096-token prefill"),
        Workload("gpt_neox_20b_prefill", {"T": 2048, "D": 6144}, "GPT-NeoX-20B: hidden 6144"),
        Workload("falcon_40b_decode", {"T": 64, "D": 8192}, "Falcon-40B: hidden 8192, batch-64 decode"),
        Workload("phi_2_prime", {"T": 1021, "D": 2560}, "Phi-2: hidden 2560, prime T", hidden=True),
        Workload("gpt2_xl_odd", {"T": 3001, "D": 1600}, "GPT-2 XL: hidden 1600, odd T", hidden=True),
    ),
    small=({"T": 7, "D": 96}, {"T": 33, "D": 200}),
    atol=1e-3,
    rtol=1e-2,
    notes="bf16 output. reference_error vs fp64 on CPU (small shapes; T=64 x D=4544): max abs 6.2e-2 (at |y| ~ 26), "
          "and every element within 3.9e-3 of itself (half a bf16 ulp; fp32 statistics add ~1e-6). rtol 1e-2 "
          "is ~2.5x that; atol covers outputs near zero, where weight * xhat and bias cancel.",
    # the reference's own error vs fp64 on scaled inputs: <=3.3e-3 relative, 0.38 of the tolerance
    stress=Stress(64.0, (0,)),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Residual-stream activations: per-token scale and offset, outlier channels.
    x = torch.randn(T, D, generator=g) * torch.exp(0.5 * torch.randn(T, 1, generator=g))
    x = x * (1.0 + 6.0 * (torch.rand(D, generator=g) > 0.99)) + 0.3 * torch.randn(D, generator=g)
    x = x + 2.0 * torch.randn(T, 1, generator=g)
    weight = 1.0 + 0.2 * torch.randn(D, generator=g)
    bias = 0.1 * torch.randn(D, generator=g)
    return tuple(t.to(device, torch.bfloat16) for t in (x, weight, bias))


def run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    acc = torch.promote_types(x.dtype, torch.float32)
    y = torch.nn.functional.layer_norm(x.to(acc), (x.shape[-1],), weight.to(acc), bias.to(acc), EPS)
    return y.to(x.dtype)


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 7.0 * T * D  # sum, centre, square, sum, scale by rstd, weight, bias


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 2.0 * (2 * T * D + 2 * D)  # read x, weight and bias once, write y once, bf16
