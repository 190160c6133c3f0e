"""RMSNorm followed by a projection, the start of every Llama-family sublayer (input_layernorm -> qkv_proj,
post_attention_layernorm -> gate_up_proj).

h = rmsnorm(x) * norm_weight (rounded to bf16, as the norm's output), y = h @ weight^T,
x (T, K), norm_weight (K,), weight (N, K) as stored by nn.Linear (no bias).
"""

import torch
import torch.nn.functional as F

from evo.eval.kernel_spec import KernelSpec, Stress, Workload

EPS = 1e-5

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("llama3_8b_qkv", {"T": 4096, "K": 4096, "N": 6144},
                 "Llama-3-8B: hidden 4096 -> qkv (32 + 2x8 heads) x 128 = 6144"),
        Workload("llama3_8b_gate_up", {"T": 2048, "K": 4096, "N": 28672},
                 "Llama-3-8B: hidden 4096 -> gate_up 2x14336"),
        Workload("llama3_70b_qkv", {"T": 2048, "K": 8192, "N": 10240},
                 "Llama-3-70B: hidden 8192 -> qkv (64 + 2x8 heads) x 128 = 10240"),
        Workload("qwen2_5_7b_qkv_prime", {"T": 1021, "K": 3584, "N": 4608},
                 "Qwen2.5-7B: hidden 3584 -> qkv (28 + 2x4 heads) x 128 = 4608 (bias dropped), prime T",
                 hidden=True),
        Workload("mistral_7b_gate_up_odd", {"T": 3001, "K": 4096, "N": 28672},
                 "Mistral-7B: hidden 4096 -> gate_up 2x14336, odd T", hidden=True),
    ),
    small=({"T": 5, "K": 48, "N": 40}, {"T": 17, "K": 64, "N": 72}),
    atol=5e-2,
    rtol=2e-2,
    notes="Output bf16; the normed activations are rounded to bf16 before the GEMM, as in the unfused pair, so "
          "the error is mostly absolute: reference_error vs fp64 abs <=1.3e-2 on CPU (T=64 with K=4096 and "
          "8192, small shapes) and <=1.9e-2 on H100 at every workload, <=3.7e-3 relative to max |y|; atol ~3x "
          "the abs error, rtol 2e-2. The reference's own error uses <=0.2 of the tolerance.",
    # the reference's own error vs fp64 on scaled inputs: <=3.5e-3 relative, 0.15 of the tolerance
    stress=Stress(64.0, (0,)),
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
    # A heavy-tailed residual stream with outlier channels; the norm's weight damps the outliers.
    x = _rows(g, T, K).mul_(torch.exp(0.5 * torch.randn(T, 1, generator=g)).to(torch.bfloat16))
    outlier = torch.rand(K, generator=g) > 0.99
    x.mul_((1.0 + 6.0 * outlier).to(torch.bfloat16))
    norm_weight = (1.0 + 0.2 * torch.randn(K, generator=g)) / (1.0 + 3.0 * outlier)
    weight = _rows(g, N, K).mul_(((0.6 + 0.6 * torch.rand(N, 1, generator=g)) / K**0.5).to(torch.bfloat16))
    return x.to(device), norm_weight.to(device, torch.bfloat16), weight.to(device)


def run(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    h = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * norm_weight.to(acc)).to(x.dtype)
    return F.linear(h, weight)


def flops(params: dict) -> float:
    T, K, N = params["T"], params["K"], params["N"]
    return 2.0 * T * N * K + 4.0 * T * K  # the GEMM, then the norm's square, sum, rstd and weight scales


def min_bytes(params: dict) -> float:
    T, K, N = params["T"], params["K"], params["N"]
    return 2.0 * (T * K + K + N * K + T * N)  # read x, norm_weight and weight, write y, bf16
