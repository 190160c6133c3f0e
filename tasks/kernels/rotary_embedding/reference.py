"""Rotary position embedding (RoPE) with Llama-3's frequencies, applied to q of shape (T, H, head_dim).

Rotate-half layout (Hugging Face Llama): with q1, q2 = the first and second halves of head_dim,
    out = cat(q1 * cos - q2 * sin, q2 * cos + q1 * sin)
where cos and sin are fp32 tables of shape (T, head_dim // 2), one row per token's position (theta 500000,
Llama-3's low/high-frequency scaling: factor 8, original context 8192), shared by all heads.
"""

import math

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("llama3_8b_q_prefill", {"T": 8192, "H": 32, "D": 128},
                 "Llama-3-8B: q, 32 heads x head_dim 128, 8192-token prefill"),
        Workload("llama3_70b_q_prefill", {"T": 4096, "H": 64, "D": 128},
                 "Llama-3-70B: q, 64 heads x head_dim 128"),
        Workload("llama3_8b_q_decode", {"T": 256, "H": 32, "D": 128}, "Llama-3-8B: q, batch-256 decode"),
        Workload("llama3_8b_k_odd", {"T": 3001, "H": 8, "D": 128}, "Llama-3-8B: k, 8 KV heads, odd T",
                 hidden=True),
        Workload("llama3_70b_q_prime", {"T": 1021, "H": 64, "D": 128}, "Llama-3-70B: q, 64 heads, prime T",
                 hidden=True),
    ),
    small=({"T": 7, "H": 3, "D": 96}, {"T": 33, "H": 5, "D": 64}),
    atol=1e-3,
    rtol=1e-2,
    notes="bf16 output. reference_error vs fp64 on CPU (small shapes; T=256 x H=32 x D=128): max abs 0.1 (at "
          "|out| ~ 37), and every element within 3.9e-3 of itself (half a bf16 ulp). rtol 1e-2 is ~2.5x that; "
          "atol covers elements where q1 * cos and q2 * sin cancel (fp32 error there ~1e-6).",
)


def llama3_inv_freq(D: int) -> torch.Tensor:
    """Llama-3's rotary frequencies (fp64): theta 500000, then its long-context scaling."""
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    factor, low, high, old_ctx = 8.0, 1.0, 4.0, 8192
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_ctx / wavelen - low) / (high - low)
    scaled = torch.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
    medium = (wavelen <= old_ctx / low) & (wavelen >= old_ctx / high)
    return torch.where(medium, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, H, D = params["T"], params["H"], params["D"]
    # Projected q: per-head scale, a few large channels (as in real q/k), occasional outliers.
    q = torch.randn(T, H, D, generator=g) * torch.exp(0.3 * torch.randn(1, H, 1, generator=g))
    q = q * (1.0 + 3.0 * (torch.rand(D, generator=g) > 0.95))
    pos = torch.randint(0, q.numel(), (q.numel() // 1000 + 1,), generator=g)
    q.view(-1)[pos] = 8.0 * torch.randn(pos.numel(), generator=g)
    # Positions of a chunk of a long sequence: a random start, then consecutive.
    start = int(torch.randint(0, 32768, (1,), generator=g))
    angles = (start + torch.arange(T, dtype=torch.float64))[:, None] * llama3_inv_freq(D)[None, :]
    cos, sin = torch.cos(angles).float(), torch.sin(angles).float()
    return q.to(device, torch.bfloat16), cos.to(device), sin.to(device)


def run(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    acc = torch.promote_types(q.dtype, torch.float32)
    qf, c, s = q.to(acc), cos.to(acc)[:, None, :], sin.to(acc)[:, None, :]
    half = q.shape[-1] // 2
    q1, q2 = qf[..., :half], qf[..., half:]
    return torch.cat((q1 * c - q2 * s, q2 * c + q1 * s), dim=-1).to(q.dtype)


def flops(params: dict) -> float:
    T, H, D = params["T"], params["H"], params["D"]
    return 3.0 * T * H * D  # per pair of elements: 4 multiplies, 2 adds


def min_bytes(params: dict) -> float:
    T, H, D = params["T"], params["H"], params["D"]
    return 2.0 * 2 * T * H * D + 4.0 * 2 * T * (D // 2)  # read q, write out (bf16); read cos and sin (fp32)
