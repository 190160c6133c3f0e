"""Per-block symmetric int8 quantisation in 1x128 groups (DeepSeek-V3's activation blocking, int8 codes).

For each row t and group j of 128 columns (the last group may be shorter):
scale[t, j] = max |x[t, 128j : 128j + 128]| / 127 (fp32), q = round(x / scale) clamped to [-127, 127] (int8).
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

QMAX = 127.0
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
    rtol=1e-5,
    notes=(
        "Codes are compared exactly. make_inputs nudges every x whose x / scale lies within 0.02 of a "
        "rounding boundary (k + 0.5) onto the grid, so any honest fp32 kernel gets the same codes and ties "
        "never occur. Scales: the fp32 reference's error against fp64 is ~6e-8 relative; rtol 1e-5. "
        "D need not be a multiple of 128 (small shapes have a short last group)."
    ),
)


def _group_amax(x: torch.Tensor) -> torch.Tensor:
    T, D = x.shape
    pad = (-D) % GROUP
    xp = torch.nn.functional.pad(x.abs(), (0, pad))
    return xp.view(T, -1, GROUP).amax(dim=2)


def _expand(s: torch.Tensor, D: int) -> torch.Tensor:
    return s.repeat_interleave(GROUP, dim=1)[:, :D]


def _no_ties(x: torch.Tensor) -> torch.Tensor:
    """Move values whose code x * QMAX / amax lies within 0.02 of k + 0.5 onto the nearest code's value."""
    x64 = x.to(torch.float64)
    a64 = _expand(_group_amax(x64), x.shape[1])
    q = x64 * QMAX / a64
    near = ((q - q.floor()) - 0.5).abs() < 0.02
    snapped = (q.round() * a64 / QMAX).to(torch.bfloat16).to(torch.float64)
    return torch.where(near, snapped, x64).to(torch.bfloat16)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Activations with outlier channels and varied row scales: per-block scales differ a lot within a row.
    outlier = 1.0 + 20.0 * (torch.rand(D, generator=g) > 0.995)
    x = (torch.randn(T, D, generator=g) * outlier * torch.exp(torch.randn(T, 1, generator=g))).to(
        torch.bfloat16
    )
    return (_no_ties(x).to(device),)


def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.float() if x.dtype != torch.float64 else x  # float64 only in the tolerance check
    scale = _group_amax(xf).clamp(min=1e-12) / QMAX
    q = torch.round(xf / _expand(scale, x.shape[1])).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 3.0 * T * D  # abs-max, scale, round


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    groups = -(-D // GROUP)
    return 2.0 * T * D + 1.0 * T * D + 4.0 * T * groups  # read x (bf16), write codes (int8) and scales (fp32)
