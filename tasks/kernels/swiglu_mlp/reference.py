"""The whole SwiGLU MLP of a Llama / Qwen / Mistral block: y = down(silu(x @ Wg^T) * (x @ Wu^T)).

x (T, H), w_gate and w_up (I, H), w_down (H, I), as stored by nn.Linear (no biases); y (T, H).
"""

import torch
import torch.nn.functional as F

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="fused",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 1024, "H": 4096, "I": 14336},
                 "Llama-3-8B: hidden 4096, intermediate 14336, 1024 tokens"),
        Workload("qwen2_5_7b_prefill", {"T": 2048, "H": 3584, "I": 18944},
                 "Qwen2.5-7B: hidden 3584, intermediate 18944"),
        Workload("llama3_70b_tp8_prefill", {"T": 2048, "H": 8192, "I": 3584},
                 "Llama-3-70B, tensor-parallel 8: hidden 8192, intermediate 28672/8 = 3584"),
        Workload("mistral_7b_prime", {"T": 509, "H": 4096, "I": 14336},
                 "Mistral-7B: hidden 4096, intermediate 14336, prime T", hidden=True),
        Workload("qwen2_5_7b_tp4_odd", {"T": 1021, "H": 3584, "I": 4736},
                 "Qwen2.5-7B, tensor-parallel 4: intermediate 18944/4 = 4736, prime T", hidden=True),
    ),
    small=({"T": 5, "H": 48, "I": 40}, {"T": 17, "H": 64, "I": 72}),
    atol=5e-2,
    rtol=2e-2,
    notes="Output bf16. The reference rounds gate, up, silu(gate) and their product to bf16 before the down "
          "projection, so its error is mostly absolute: reference_error vs fp64 abs <=1.6e-2 on CPU (T=32 with "
          "(H, I) = (4096, 14336) and (8192, 3584), small shapes) and <=1.9e-2 on H100 at every workload, "
          "<=5.6e-3 relative to max |y|; atol ~3x the abs error, rtol 2e-2. The reference's own error uses "
          "<=0.3 of the tolerance.",
)


def _rows(g: torch.Generator, rows: int, cols: int, uniform: bool = False) -> torch.Tensor:
    """A (rows, cols) bf16 tensor of standard normals (or uniforms in [-1, 1)), drawn fast: each row is a
    randomly shifted window of one long random sequence (rows * cols draws on the CPU take seconds)."""
    pool = 2.0 * torch.rand(cols + 65521, generator=g) - 1.0 if uniform else torch.randn(cols + 65521, generator=g)
    offsets = torch.randint(0, 65522, (rows,), generator=g)
    return pool.to(torch.bfloat16).unfold(0, cols, 1)[offsets]


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, H, inter = params["T"], params["H"], params["I"]
    # RMSNorm-ed activations with a few outlier channels; weights ~ N(0, 1/fan_in), per-row scale spread.
    x = _rows(g, T, H).mul_((1.0 + 3.0 * (torch.rand(H, generator=g) > 0.98)).to(torch.bfloat16))
    w_gate = _rows(g, inter, H).mul_(((0.6 + 0.6 * torch.rand(inter, 1, generator=g)) / H**0.5).to(torch.bfloat16))
    w_up = _rows(g, inter, H).mul_(((0.6 + 0.6 * torch.rand(inter, 1, generator=g)) / H**0.5).to(torch.bfloat16))
    w_down = _rows(g, H, inter).mul_(((0.6 + 0.6 * torch.rand(H, 1, generator=g)) / inter**0.5).to(torch.bfloat16))
    return x.to(device), w_gate.to(device), w_up.to(device), w_down.to(device)


def run(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def flops(params: dict) -> float:
    T, H, inter = params["T"], params["H"], params["I"]
    return 6.0 * T * H * inter + 5.0 * T * inter  # three GEMMs, then silu(gate) * up


def min_bytes(params: dict) -> float:
    T, H, inter = params["T"], params["H"], params["I"]
    return 2.0 * (T * H + 3 * H * inter + T * H)  # read x and the three weights, write y, bf16
