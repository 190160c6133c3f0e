"""GELU, tanh approximation (gelu_pytorch_tanh / gelu_new), the MLP activation of Gemma and GPT-2.

y = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))), elementwise.
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("gemma2_9b_prefill", {"T": 4096, "D": 14336}, "Gemma-2-9B: intermediate 14336, 4096-token prefill"),
        Workload("gemma_7b_prefill", {"T": 2048, "D": 24576}, "Gemma-7B: intermediate 24576"),
        Workload("gemma2_27b_decode", {"T": 64, "D": 36864}, "Gemma-2-27B: intermediate 36864, batch-64 decode"),
        Workload("gpt2_xl_prime", {"T": 1021, "D": 6400}, "GPT-2 XL: intermediate 6400, prime T", hidden=True),
        Workload("gemma2_9b_odd", {"T": 3001, "D": 14336}, "Gemma-2-9B: intermediate 14336, odd T", hidden=True),
    ),
    small=({"T": 7, "D": 96}, {"T": 33, "D": 200}),
    atol=1e-3,
    rtol=1e-2,
    notes="bf16 output. reference_error vs fp64 on CPU (small shapes; T=64 x D=6400): max abs 7.8e-3, and every "
          "element within 3.9e-3 of itself (half a bf16 ulp). rtol 1e-2 is ~2.5x that; atol covers the far "
          "negative tail, where y underflows and formulas through tanh or exp differ by ~1e-7.",
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Up-projection outputs: per-token scale, a few outlier channels, a sprinkle of large values.
    x = torch.randn(T, D, generator=g) * torch.exp(0.4 * torch.randn(T, 1, generator=g))
    x = x * (1.0 + 5.0 * (torch.rand(D, generator=g) > 0.995)) - 0.2
    pos = torch.randint(0, T * D, (T * D // 1000 + 1,), generator=g)
    x.view(-1)[pos] = 12.0 * torch.randn(pos.numel(), generator=g)
    return (x.to(device, torch.bfloat16),)


def run(x: torch.Tensor) -> torch.Tensor:
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    return torch.nn.functional.gelu(xf, approximate="tanh").to(x.dtype)


def flops(params: dict) -> float:
    # x^3 (2), * 0.044715, + x, * sqrt(2/pi), tanh (exp, add, divide: 3), + 1, * x, * 0.5
    return 11.0 * params["T"] * params["D"]


def min_bytes(params: dict) -> float:
    return 2.0 * 2 * params["T"] * params["D"]  # read x once, write y once, bf16
