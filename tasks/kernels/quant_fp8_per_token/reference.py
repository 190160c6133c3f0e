"""Per-token dynamic fp8 (e4m3) quantisation of activations, as in FP8 Llama-3 serving (vLLM, TensorRT-LLM).

scale[t] = max_d |x[t, d]| / 448 (fp32), q[t, d] = float8_e4m3fn(x[t, d] / scale[t]) rounded to nearest,
within [-448, 448].
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

FP8_MAX = 448.0

SPEC = KernelSpec(
    category="quant",
    workloads=(
        Workload(
            "llama3_70b_prefill", {"T": 2048, "D": 8192}, "Llama-3-70B FP8: hidden 8192, 2048-token prefill"
        ),
        Workload("llama3_8b_prefill", {"T": 4096, "D": 4096}, "Llama-3-8B FP8: hidden 4096"),
        Workload("llama3_70b_mlp_down", {"T": 512, "D": 28672}, "Llama-3-70B FP8: intermediate 28672"),
        Workload("qwen2_5_7b_prime", {"T": 1999, "D": 3584}, "Qwen2.5-7B: hidden 3584, prime T", hidden=True),
        Workload(
            "mistral_7b_mlp_odd",
            {"T": 3001, "D": 14336},
            "Mistral-7B: intermediate 14336, odd T",
            hidden=True,
        ),
    ),
    small=({"T": 5, "D": 200}, {"T": 6, "D": 1500}),
    atol=1e-6,
    rtol=1e-5,
    notes=(
        "fp8 codes are compared as floats but the tolerance makes them exact (neighbouring e4m3 values "
        "differ by >= 6% or 2^-9). make_inputs nudges every x whose x / scale lies within 2% of a gap from "
        "an e4m3 rounding boundary onto the grid, so any honest fp32 kernel gets the same codes and ties "
        "never occur (subnormals included). Scales: fp32 vs fp64 error ~6e-8 relative; rtol 1e-5. Triton "
        "3.9's CPU interpreter mis-rounds fp32->fp8 casts (no carry into the exponent, truncated "
        "subnormals); the seed rounds to the e4m3 grid in fp32 first, so its cast is exact on GPU and in "
        "the interpreter."
    ),
)


def _e4m3_grid() -> torch.Tensor:
    v = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float64)
    return torch.unique(v[torch.isfinite(v) & (v >= 0)])  # sorted: 0, subnormals, normals up to 448


def _no_ties(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """Move values whose code lies within 2% of a gap from an e4m3 rounding boundary onto the grid."""
    grid = _e4m3_grid()
    mids, gaps = (grid[1:] + grid[:-1]) / 2, grid[1:] - grid[:-1]
    x64, a64 = x.to(torch.float64), amax.to(torch.float64)
    q = (x64 * FP8_MAX / a64).clamp(-FP8_MAX, FP8_MAX)
    i = torch.searchsorted(mids, q.abs()).clamp(1, len(mids) - 1)
    dist = torch.minimum((q.abs() - mids[i]).abs() / gaps[i], (q.abs() - mids[i - 1]).abs() / gaps[i - 1])
    snapped = (
        (q.to(torch.float8_e4m3fn).to(torch.float64) * a64 / FP8_MAX).to(torch.bfloat16).to(torch.float64)
    )
    return torch.where(dist < 0.02, snapped, x64).to(torch.bfloat16)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Activations with large outlier channels and varied row scales; small values land in e4m3 subnormals.
    outlier = 1.0 + 50.0 * (torch.rand(D, generator=g) > 0.995)
    x = (torch.randn(T, D, generator=g) * outlier * torch.exp(torch.randn(T, 1, generator=g))).to(
        torch.bfloat16
    )
    x = _no_ties(x, x.float().abs().amax(dim=1, keepdim=True))
    return (x.to(device),)


def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.float() if x.dtype != torch.float64 else x  # float64 only in the tolerance check
    scale = xf.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    q = (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 3.0 * T * D  # abs-max, scale, convert


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 2.0 * T * D + 1.0 * T * D + 4.0 * T  # read x (bf16), write codes (fp8) and scales (fp32)
