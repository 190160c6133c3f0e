"""Causal sliding-window grouped-query attention forward (prefill), as in Mistral-7B: query i attends
to the W keys i - W + 1 .. i (keys j with i - W < j <= i); query head h reads key/value head
h // (H / H_KV)."""

import torch
import torch.nn.functional as F

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="attention",
    workloads=(
        Workload(
            "mistral_7b_4k_w1024",
            {"B": 1, "H": 32, "H_KV": 8, "T": 4096, "W": 1024, "d": 128},
            "Mistral-7B: 32 query / 8 KV heads x 128; window 4096 scaled to 1024 on 4096 tokens",
        ),
        Workload(
            "mistral_7b_b2_4k_w2048",
            {"B": 2, "H": 32, "H_KV": 8, "T": 4096, "W": 2048, "d": 128},
            "Mistral-7B: 32 query / 8 KV heads x 128; window 2048, batch 2 x 4096",
        ),
        Workload(
            "mistral_7b_b4_2k_w512",
            {"B": 4, "H": 32, "H_KV": 8, "T": 2048, "W": 512, "d": 128},
            "Mistral-7B: 32 query / 8 KV heads x 128; window 512, batch 4 x 2048",
        ),
        Workload(
            "mistral_7b_odd",
            {"B": 2, "H": 32, "H_KV": 8, "T": 3001, "W": 777, "d": 128},
            "Mistral-7B: 32 query / 8 KV heads x 128; odd T and window",
            hidden=True,
        ),
    ),
    small=(
        {"B": 1, "H": 2, "H_KV": 1, "T": 37, "W": 7, "d": 32},
        {"B": 2, "H": 4, "H_KV": 2, "T": 50, "W": 20, "d": 16},
    ),
    atol=2e-2,
    rtol=2e-2,
    notes=(
        "Outputs are weighted means of v ~ N(0, 1). The reference (SDPA, fp32 accumulation, bf16 out) "
        "differs from fp64 by <= 8e-3 absolute on CPU (T 37 .. 1024), one bf16 rounding of outputs up to ~4 "
        "(early rows and small windows average few values); FlashAttention also rounds P to bf16. "
        "atol = rtol = 2e-2 is ~3x that. FLOPs count only the unmasked pairs: "
        "4 * B * H * d * sum_i min(i + 1, W)."
    ),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    B, H, H_KV, T, d = params["B"], params["H"], params["H_KV"], params["T"], params["d"]
    # q with per-head scales so some heads attend sharply (peaked softmax) and others diffusely.
    q = torch.randn(B, H, T, d, generator=g) * (0.5 + 1.5 * torch.rand(1, H, 1, 1, generator=g))
    k = torch.randn(B, H_KV, T, d, generator=g)
    v = torch.randn(B, H_KV, T, d, generator=g)
    return (*(t.to(device, torch.bfloat16) for t in (q, k, v)), params["W"])  # W: a plain Python int


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, W: int) -> torch.Tensor:
    T, group = q.shape[2], q.shape[1] // k.shape[1]
    i = torch.arange(T, device=q.device)
    mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - W)  # True = attend
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _pairs(T: int, W: int) -> int:
    return T * (T + 1) // 2 if T <= W else W * (W + 1) // 2 + (T - W) * W


def flops(params: dict) -> float:
    B, H, T, W, d = params["B"], params["H"], params["T"], params["W"], params["d"]
    return 4.0 * B * H * d * _pairs(T, W)  # q k^T and p v over the unmasked pairs only


def min_bytes(params: dict) -> float:
    B, H, H_KV, T, d = params["B"], params["H"], params["H_KV"], params["T"], params["d"]
    return 2.0 * (2 * B * H * T * d + 2 * B * H_KV * T * d)  # read q, k, v and write o once, bf16
