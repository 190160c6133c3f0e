"""Dequantisation of a tensor quantised in 1x128 groups (DeepSeek-V3's blocking, int8 codes):
x = q * scale of the group."""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

GROUP = 128

SPEC = KernelSpec(
    category="quant",
    workloads=(
        Workload("deepseek_v3_prefill", {"T": 4096, "D": 7168}, "DeepSeek-V3: hidden 7168, 1x128 groups"),
        Workload("deepseek_v3_moe_down", {"T": 8192, "D": 2048}, "DeepSeek-V3: MoE expert intermediate 2048"),
        Workload("llama3_8b_mlp_down", {"T": 2048, "D": 14336}, "Llama-3-8B: intermediate 14336"),
        Workload(
            "deepseek_v3_prime", {"T": 1021, "D": 7168}, "DeepSeek-V3: hidden 7168, prime T", hidden=True
        ),
        Workload(
            "qwen2_5_7b_odd",
            {"T": 1999, "D": 3584},
            "Qwen2.5-7B: hidden 3584 (28 groups), prime T",
            hidden=True,
        ),
    ),
    small=({"T": 5, "D": 200}, {"T": 3, "D": 384}),
    atol=1e-6,
    rtol=1e-2,
    notes=(
        "The product q * scale is one fp32 rounding, then one bf16 rounding: the reference's error against "
        "fp64 is <= 2^-8 relative (3.9e-3; 0.39 of the tolerance on CPU and H100); rtol 1e-2 (2.5x) also "
        "covers round-toward-zero bf16 stores (< 2^-7; Triton's CPU interpreter truncates fp32 -> bf16). "
        "atol 1e-6 only matters for zero codes, which are exact."
    ),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    groups = -(-D // GROUP)
    # Codes as a real quantiser leaves them: roughly Gaussian, one full-scale (+-127) value per group.
    q = (torch.randn(T, D, generator=g) * 30.0).round().clamp(-127, 127)
    full = torch.randint(0, GROUP, (T, groups), generator=g) + torch.arange(groups) * GROUP
    full = full.clamp(max=D - 1)
    q.scatter_(1, full, torch.where(torch.rand(T, groups, generator=g) > 0.5, 127.0, -127.0))
    scale = torch.exp(torch.randn(T, groups, generator=g) * 1.5 - 4.0)  # log-normal, ~2e-4 .. 2
    return q.to(device, torch.int8), scale.to(device, torch.float32)


def run(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    D = q.shape[1]
    x = q.to(scale.dtype) * scale.repeat_interleave(GROUP, dim=1)[:, :D]
    # bf16 out; float64 scales only come from the tolerance check, whose run stays in float64
    return x if scale.dtype == torch.float64 else x.to(torch.bfloat16)


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 1.0 * T * D  # one multiply per element


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    groups = -(-D // GROUP)
    return 1.0 * T * D + 4.0 * T * groups + 2.0 * T * D  # read codes (int8) and scales (fp32), write bf16
