"""SwiGLU activation of a fused gate_up projection, as in every Llama / Qwen / Mistral MLP (vLLM's SiluAndMul).

gate_up (T, 2I) holds [gate | up]; y = silu(gate) * up, (T, I).
"""

import torch
import torch.nn.functional as F

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 4096, "I": 14336}, "Llama-3-8B: intermediate 14336, 4096 tokens"),
        Workload("qwen2_5_7b_prefill", {"T": 2048, "I": 18944}, "Qwen2.5-7B: intermediate 18944"),
        Workload("llama3_70b_prefill", {"T": 1024, "I": 28672}, "Llama-3-70B: intermediate 28672"),
        Workload("qwen2_5_7b_tp4_prime", {"T": 1021, "I": 4736},
                 "Qwen2.5-7B, tensor-parallel 4: intermediate 18944/4 = 4736, prime T", hidden=True),
        Workload("llama3_70b_tp8_odd", {"T": 3001, "I": 3584},
                 "Llama-3-70B, tensor-parallel 8: intermediate 28672/8 = 3584, odd T", hidden=True),
    ),
    small=({"T": 7, "I": 40}, {"T": 33, "I": 200}),
    atol=1e-2,
    rtol=2e-2,
    notes="Output bf16, computed in fp32 from bf16 inputs: one rounding. reference_error vs fp64: <=3.2e-3 "
          "relative to max |y| (abs <=6e-2 on |y| up to ~20) on CPU (T=64, I=14336, small shapes) and on H100 "
          "at every workload; atol ~4x the error on |y| < 1, rtol 2e-2 so that a 1-ulp flip at the bottom of a "
          "binade (2^-7 relative) passes. The reference's own error uses <=0.2 of the tolerance.",
)


def _rows(g: torch.Generator, rows: int, cols: int, uniform: bool = False) -> torch.Tensor:
    """A (rows, cols) bf16 tensor of standard normals (or uniforms in [-1, 1)), drawn fast: each row is a
    randomly shifted window of one long random sequence (rows * cols draws on the CPU take seconds)."""
    pool = 2.0 * torch.rand(cols + 65521, generator=g) - 1.0 if uniform else torch.randn(cols + 65521, generator=g)
    offsets = torch.randint(0, 65522, (rows,), generator=g)
    return pool.to(torch.bfloat16).unfold(0, cols, 1)[offsets]


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, inter = params["T"], params["I"]
    # Pre-activations of a SwiGLU MLP: gate slightly negative-biased, both with per-channel scale spread.
    gate_up = _rows(g, T, 2 * inter)
    gate_up[:, :inter] -= 0.3
    gate_up.mul_((0.5 + torch.rand(2 * inter, generator=g)).to(torch.bfloat16))
    return (gate_up.to(device),)


def run(gate_up: torch.Tensor) -> torch.Tensor:
    acc = torch.promote_types(gate_up.dtype, torch.float32)
    gate, up = gate_up.to(acc).chunk(2, dim=-1)
    return (F.silu(gate) * up).to(gate_up.dtype)


def flops(params: dict) -> float:
    T, inter = params["T"], params["I"]
    return 5.0 * T * inter  # negate, exp, add, divide (the sigmoid times gate) and the multiply by up


def min_bytes(params: dict) -> float:
    T, inter = params["T"], params["I"]
    return 2.0 * (2 * T * inter + T * inter)  # read gate_up, write y, bf16
