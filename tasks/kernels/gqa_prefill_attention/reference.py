"""Causal grouped-query attention forward (prefill): query head h reads key/value head h // (H / H_KV)."""

import torch
import torch.nn.functional as F

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="attention",
    workloads=(
        Workload(
            "llama3_8b_4k",
            {"B": 1, "H": 32, "H_KV": 8, "T": 4096, "d": 128},
            "Llama-3-8B: 32 query / 8 KV heads x 128, 4096 tokens",
        ),
        Workload(
            "llama3_8b_batch4",
            {"B": 4, "H": 32, "H_KV": 8, "T": 1024, "d": 128},
            "Llama-3-8B: 32 query / 8 KV heads x 128, batch 4 x 1024",
        ),
        Workload(
            "llama3_70b_2k",
            {"B": 1, "H": 64, "H_KV": 8, "T": 2048, "d": 128},
            "Llama-3-70B: 64 query / 8 KV heads x 128, 2048 tokens",
        ),
        Workload(
            "qwen2_5_7b_prime",
            {"B": 2, "H": 28, "H_KV": 4, "T": 1999, "d": 128},
            "Qwen2.5-7B: 28 query / 4 KV heads x 128, prime T",
            hidden=True,
        ),
    ),
    small=({"B": 1, "H": 4, "H_KV": 2, "T": 19, "d": 32}, {"B": 2, "H": 3, "H_KV": 1, "T": 40, "d": 64}),
    atol=2e-2,
    rtol=2e-2,
    notes=(
        "Outputs are weighted means of v ~ N(0, 1). The reference (SDPA, fp32 accumulation, bf16 out) "
        "differs from fp64 by <= 8e-3 absolute on CPU (T 19 .. 1024), one bf16 rounding of outputs up to ~4 "
        "(early rows average few values); FlashAttention also rounds P to bf16 before P @ V. "
        "atol = rtol = 2e-2 is ~3x that. FLOPs count only the unmasked causal half: "
        "4 * B * H * d * T * (T + 1) / 2."
    ),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    B, H, H_KV, T, d = params["B"], params["H"], params["H_KV"], params["T"], params["d"]
    # q with per-head scales so some heads attend sharply (peaked softmax) and others diffusely.
    q = torch.randn(B, H, T, d, generator=g) * (0.5 + 1.5 * torch.rand(1, H, 1, 1, generator=g))
    k = torch.randn(B, H_KV, T, d, generator=g)
    v = torch.randn(B, H_KV, T, d, generator=g)
    return tuple(t.to(device, torch.bfloat16) for t in (q, k, v))


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def flops(params: dict) -> float:
    B, H, T, d = params["B"], params["H"], params["T"], params["d"]
    return 4.0 * B * H * d * T * (T + 1) / 2  # q k^T and p v over the T (T + 1) / 2 unmasked pairs


def min_bytes(params: dict) -> float:
    B, H, H_KV, T, d = params["B"], params["H"], params["H_KV"], params["T"], params["d"]
    return 2.0 * (2 * B * H * T * d + 2 * B * H_KV * T * d)  # read q, k, v and write o once, bf16
