"""Split a fused QKV projection into q, k, v heads and apply rotary position embeddings to q and k
(the step between qkv_proj and attention in every Llama / Qwen / Mistral block; GPT-NeoX rotate-half style).

qkv (T, (Hq + 2*Hkv) * D) bf16 holds [q heads | k heads | v heads]; cos, sin (T, D/2) fp32 are the rotary
tables gathered at each token's position. For x in q and k heads: x1, x2 = x[:D/2], x[D/2:],
out = [x1*cos - x2*sin, x2*cos + x1*sin]. Returns q (T, Hq, D), k (T, Hkv, D), v (T, Hkv, D), bf16.
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 8192, "Hq": 32, "Hkv": 8, "D": 128, "theta": 500000.0},
                 "Llama-3-8B: 32 q heads, 8 kv heads, head_dim 128, rope_theta 5e5; 8192 tokens"),
        Workload("qwen2_5_7b_prefill", {"T": 8192, "Hq": 28, "Hkv": 4, "D": 128, "theta": 1000000.0},
                 "Qwen2.5-7B: 28 q heads, 4 kv heads, head_dim 128, rope_theta 1e6"),
        Workload("llama3_70b_prefill", {"T": 4096, "Hq": 64, "Hkv": 8, "D": 128, "theta": 500000.0},
                 "Llama-3-70B: 64 q heads, 8 kv heads, head_dim 128"),
        Workload("qwen2_5_7b_prime", {"T": 1021, "Hq": 28, "Hkv": 4, "D": 128, "theta": 1000000.0},
                 "Qwen2.5-7B: prime T", hidden=True),
        Workload("mistral_7b_odd_tokens", {"T": 3001, "Hq": 32, "Hkv": 8, "D": 128, "theta": 10000.0},
                 "Mistral-7B: 32 q heads, 8 kv heads, head_dim 128, rope_theta 1e4; odd T", hidden=True),
    ),
    small=({"T": 5, "Hq": 4, "Hkv": 2, "D": 16, "theta": 10000.0},
           {"T": 17, "Hq": 3, "Hkv": 1, "D": 40, "theta": 500000.0}),
    atol=1e-2,
    rtol=2e-2,
    notes="Outputs bf16, rotated in fp32 from bf16 inputs and fp32 tables: one rounding (v is an exact copy). "
          "reference_error vs fp64: <=3.7e-3 relative to max |q| (abs <=6e-2 on values up to ~27) on CPU (T=256 "
          "with the Llama-3-8B heads, small shapes) and on H100 at every workload; atol ~4x the error on |x| < "
          "1, rtol 2e-2 so that a 1-ulp flip passes. The reference's own error uses <=0.2 of the tolerance.",
)


def make_inputs(params: dict, seed: int, device: str) -> tuple:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, Hq, Hkv, D = params["T"], params["Hq"], params["Hkv"], params["D"]
    # Projections with per-channel scale spread (k has a few large channels, as observed in real models).
    width = (Hq + 2 * Hkv) * D
    scale = 0.5 + torch.rand(width, generator=g)
    scale[Hq * D:(Hq + Hkv) * D] *= 1.0 + 3.0 * (torch.rand(Hkv * D, generator=g) > 0.95)
    qkv = torch.randn(T, width, generator=g) * scale
    # Positions of a packed batch of prompts (varlen prefill): each sequence restarts at a random offset.
    positions = torch.empty(T, dtype=torch.int64)
    start = 0
    while start < T:
        length = int(torch.randint(1, max(2, T // 2), (1,), generator=g))
        offset = int(torch.randint(0, 4096, (1,), generator=g))
        n = min(length, T - start)
        positions[start:start + n] = torch.arange(offset, offset + n)
        start += n
    inv_freq = 1.0 / params["theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos().to(torch.float32), angles.sin().to(torch.float32)
    return qkv.to(device, torch.bfloat16), cos.to(device), sin.to(device), Hq, Hkv


def run(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_q_heads: int,
        num_kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T, D = qkv.shape[0], 2 * cos.shape[1]
    acc = torch.promote_types(qkv.dtype, torch.float32)
    heads = qkv.view(T, num_q_heads + 2 * num_kv_heads, D)
    qk = heads[:, :num_q_heads + num_kv_heads].to(acc)
    x1, x2 = qk[..., :D // 2], qk[..., D // 2:]
    c, s = cos.to(acc)[:, None, :], sin.to(acc)[:, None, :]
    rotated = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(qkv.dtype)
    q, k = rotated[:, :num_q_heads].contiguous(), rotated[:, num_q_heads:].contiguous()
    v = heads[:, num_q_heads + num_kv_heads:].contiguous()
    return q, k, v


def flops(params: dict) -> float:
    T, Hq, Hkv, D = params["T"], params["Hq"], params["Hkv"], params["D"]
    return 3.0 * T * (Hq + Hkv) * D  # two multiplies and an add per rotated element


def min_bytes(params: dict) -> float:
    T, Hq, Hkv, D = params["T"], params["Hq"], params["Hkv"], params["D"]
    # read qkv (bf16) and the cos/sin tables (fp32), write q, k and v (bf16)
    return 2.0 * T * (Hq + 2 * Hkv) * D * 2 + 4.0 * T * D
