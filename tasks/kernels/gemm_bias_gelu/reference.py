"""Linear + bias + GELU (tanh approximation): the first MLP projection of GPT-J, Phi-2 and StarCoder2.

y = gelu_tanh(x @ weight^T + bias), x (T, K), weight (N, K) as stored by nn.Linear, bias (N,).
"""

import torch
import torch.nn.functional as F

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("gpt_j_6b_fc_in", {"T": 2048, "K": 4096, "N": 16384},
                 "GPT-J-6B: hidden 4096 -> 16384, gelu_new (tanh), biased"),
        Workload("phi_2_fc1", {"T": 4096, "K": 2560, "N": 10240}, "Phi-2: hidden 2560 -> 10240, gelu_new, biased"),
        Workload("starcoder2_7b_c_fc", {"T": 2048, "K": 4608, "N": 18432},
                 "StarCoder2-7B: hidden 4608 -> 18432, gelu_pytorch_tanh, biased"),
        Workload("gpt2_xl_prime", {"T": 1021, "K": 1600, "N": 6400},
                 "GPT-2 XL: hidden 1600 -> 6400, gelu_new, prime T", hidden=True),
        Workload("phi_2_odd_tokens", {"T": 3001, "K": 2560, "N": 10240}, "Phi-2: hidden 2560, odd T", hidden=True),
    ),
    small=({"T": 5, "K": 48, "N": 40}, {"T": 17, "K": 64, "N": 72}),
    atol=2e-2,
    rtol=2e-2,
    notes="Output bf16; the reference rounds x @ W^T + b to bf16 before the GELU. reference_error vs fp64: abs "
          "<=1.6e-2 (on outputs up to ~8), <=3.7e-3 relative to max |y|, on CPU (T=64 with K=1600 and 4608, "
          "small shapes) and on H100 at every workload; tolerance ~4x the relative error, rounded up. The "
          "reference's own error uses <=0.3 of the tolerance.",
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
    # LayerNorm-ed activations with a few outlier channels; weights ~ N(0, 1/K) with per-row scale spread.
    x = _rows(g, T, K).mul_((1.0 + 3.0 * (torch.rand(K, generator=g) > 0.98)).to(torch.bfloat16))
    weight = _rows(g, N, K).mul_(((0.6 + 0.6 * torch.rand(N, 1, generator=g)) / K**0.5).to(torch.bfloat16))
    bias = 0.3 * torch.randn(N, generator=g) - 0.2
    return x.to(device), weight.to(device), bias.to(device, torch.bfloat16)


def run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(F.linear(x, weight, bias), approximate="tanh")


def flops(params: dict) -> float:
    T, K, N = params["T"], params["K"], params["N"]
    return 2.0 * T * N * K + 9.0 * T * N  # the GEMM, then bias add and the tanh-GELU (~8 ops) per output


def min_bytes(params: dict) -> float:
    T, K, N = params["T"], params["K"], params["N"]
    return 2.0 * (T * K + N * K + N + T * N)  # read x, weight and bias, write y, bf16
