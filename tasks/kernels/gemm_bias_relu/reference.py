"""Linear + bias + ReLU: the first MLP projection (fc1) of the OPT family.

y = relu(x @ weight^T + bias), x (T, K), weight (N, K) as stored by nn.Linear, bias (N,).
"""

import torch
import torch.nn.functional as F

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("opt_6_7b_fc1", {"T": 2048, "K": 4096, "N": 16384}, "OPT-6.7B: hidden 4096 -> ffn 16384, ReLU"),
        Workload("opt_13b_fc1", {"T": 2048, "K": 5120, "N": 20480}, "OPT-13B: hidden 5120 -> ffn 20480, ReLU"),
        Workload("opt_30b_fc1", {"T": 1024, "K": 7168, "N": 28672}, "OPT-30B: hidden 7168 -> ffn 28672, ReLU"),
        Workload("opt_2_7b_prime", {"T": 1021, "K": 2560, "N": 10240},
                 "OPT-2.7B: hidden 2560 -> ffn 10240, prime T", hidden=True),
        Workload("opt_6_7b_odd_tokens", {"T": 3001, "K": 4096, "N": 16384}, "OPT-6.7B: hidden 4096, odd T",
                 hidden=True),
    ),
    small=({"T": 5, "K": 48, "N": 40}, {"T": 17, "K": 64, "N": 72}),
    atol=2e-2,
    rtol=2e-2,
    notes="Output bf16. reference_error vs fp64: abs <=1.6e-2 (on outputs up to ~7), <=3.1e-3 relative to max "
          "|y|, on CPU (T=64 with K=2560 and 7168, small shapes) and on H100 at every workload; tolerance ~4x "
          "the relative error, rounded up. The reference's own error uses <=0.2 of the tolerance.",
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
    # LayerNorm-ed activations with a few outlier channels; weights ~ N(0, 1/K), uniform per-row scale spread.
    x = _rows(g, T, K).mul_((1.0 + 3.0 * (torch.rand(K, generator=g) > 0.98)).to(torch.bfloat16))
    weight = _rows(g, N, K, uniform=True)
    weight.mul_(((0.6 + 0.6 * torch.rand(N, 1, generator=g)) * 3**0.5 / K**0.5).to(torch.bfloat16))
    bias = 0.3 * torch.randn(N, generator=g) - 0.1
    return x.to(device), weight.to(device), bias.to(device, torch.bfloat16)


def run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.relu(F.linear(x, weight, bias))


def flops(params: dict) -> float:
    T, K, N = params["T"], params["K"], params["N"]
    return 2.0 * T * N * K + 2.0 * T * N  # the GEMM, then bias add and ReLU per output


def min_bytes(params: dict) -> float:
    T, K, N = params["T"], params["K"], params["N"]
    return 2.0 * (T * K + N * K + N + T * N)  # read x, weight and bias, write y, bf16
