"""SiLU forward, the gate activation of every Llama-family MLP: y = x * sigmoid(x), elementwise."""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 4096, "D": 14336}, "Llama-3-8B: intermediate 14336, 4096-token prefill"),
        Workload("qwen2_5_7b_prefill", {"T": 2048, "D": 18944}, "Qwen2.5-7B: intermediate 18944"),
        Workload("llama3_70b_decode", {"T": 64, "D": 28672}, "Llama-3-70B: intermediate 28672, batch-64 decode"),
        Workload("qwen2_5_7b_prime", {"T": 1021, "D": 18944}, "Qwen2.5-7B: intermediate 18944, prime T", hidden=True),
        Workload("qwen2_5_0_5b_odd", {"T": 3001, "D": 4864}, "Qwen2.5-0.5B: intermediate 4864, odd T", hidden=True),
    ),
    small=({"T": 7, "D": 96}, {"T": 33, "D": 200}),
    atol=1e-3,
    rtol=1e-2,
    notes="bf16 output. reference_error vs fp64 on CPU (small shapes; T=64 x D=4864): max abs 1.6e-2 (at |y| ~ 39), "
          "and every element within 3.8e-3 of itself (half a bf16 ulp). rtol 1e-2 is ~2.5x that, enough for a "
          "one-ulp rounding disagreement; atol covers outputs that underflow or flush to zero (x < -88).",
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Gate pre-activations: per-token scale, a few outlier channels, a sprinkle of large values.
    x = torch.randn(T, D, generator=g) * torch.exp(0.4 * torch.randn(T, 1, generator=g))
    x = x * (1.0 + 5.0 * (torch.rand(D, generator=g) > 0.995)) - 0.2
    pos = torch.randint(0, T * D, (T * D // 1000 + 1,), generator=g)
    x.view(-1)[pos] = 12.0 * torch.randn(pos.numel(), generator=g)
    return (x.to(device, torch.bfloat16),)


def run(x: torch.Tensor) -> torch.Tensor:
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    return torch.nn.functional.silu(xf).to(x.dtype)


def flops(params: dict) -> float:
    return 4.0 * params["T"] * params["D"]  # exp(-x), add 1, divide, multiply by x


def min_bytes(params: dict) -> float:
    return 2.0 * 2 * params["T"] * params["D"]  # read x once, write y once, bf16
