"""Per-token symmetric int8 quantisation of activations (SmoothQuant / W8A8 style).

scale[t] = max_d |x[t, d]| / 127 (fp32), q[t, d] = round(x[t, d] / scale[t]) clamped to [-127, 127] (int8).
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

QMAX = 127.0

SPEC = KernelSpec(
    category="quant",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 4096, "D": 4096}, "Llama-3-8B: hidden 4096, 4096-token prefill"),
        Workload(
            "llama3_8b_mlp_down", {"T": 2048, "D": 14336}, "Llama-3-8B: intermediate 14336 (down_proj input)"
        ),
        Workload("llama3_70b_decode", {"T": 128, "D": 8192}, "Llama-3-70B: hidden 8192, batch-128 decode"),
        Workload("qwen2_5_7b_prime", {"T": 1999, "D": 3584}, "Qwen2.5-7B: hidden 3584, prime T", hidden=True),
        Workload(
            "qwen2_5_7b_mlp_odd",
            {"T": 509, "D": 18944},
            "Qwen2.5-7B: intermediate 18944, prime T",
            hidden=True,
        ),
    ),
    small=({"T": 5, "D": 200}, {"T": 6, "D": 1500}),
    atol=1e-6,
    rtol=1e-5,
    notes=(
        "Codes are compared exactly. make_inputs nudges every x whose x / scale lies within 0.02 of a "
        "rounding boundary (k + 0.5) onto the grid, so any honest fp32 kernel (x / scale, x * (127 / amax), "
        "any round-to-nearest) gets the same codes, and ties never occur. Scales: the fp32 reference's error "
        "against fp64 is ~6e-8 relative (one fp32 rounding); rtol 1e-5 leaves room for amax * (1/127)."
    ),
)


def _no_ties(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """Move values whose code x * QMAX / amax lies within 0.02 of k + 0.5 onto the nearest code's value."""
    x64, a64 = x.to(torch.float64), amax.to(torch.float64)
    q = x64 * QMAX / a64
    near = ((q - q.floor()) - 0.5).abs() < 0.02
    snapped = (q.round() * a64 / QMAX).to(torch.bfloat16).to(torch.float64)
    return torch.where(near, snapped, x64).to(torch.bfloat16)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Activations with a few large outlier channels (what makes per-token int8 hard) and varied row scales.
    outlier = 1.0 + 20.0 * (torch.rand(D, generator=g) > 0.995)
    x = (torch.randn(T, D, generator=g) * outlier * torch.exp(torch.randn(T, 1, generator=g))).to(
        torch.bfloat16
    )
    x = _no_ties(x, x.float().abs().amax(dim=1, keepdim=True))
    return (x.to(device),)


def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.float() if x.dtype != torch.float64 else x  # float64 only in the tolerance check
    scale = xf.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / QMAX
    q = torch.round(xf / scale).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 3.0 * T * D  # abs-max, scale, round


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 2.0 * T * D + 1.0 * T * D + 4.0 * T  # read x (bf16), write codes (int8) and scales (fp32)
