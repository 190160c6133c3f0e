"""Cumulative sum along the last dimension, in fp32, for two real uses:

- kind "probs": top-p (nucleus) sampling, the running sum of each row's probabilities sorted largest first;
- kind "decay": Mamba-2's SSD scan, the running sum of dt * A (negative log-decays) within each 256-step chunk,
  one row per (sequence, head, chunk).
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("llama3_8b_top_p", {"T": 256, "N": 128256, "kind": "probs"},
                 "Llama-3-8B: vocab 128256, batch-256 top-p sampling"),
        Workload("qwen2_5_7b_top_p", {"T": 128, "N": 152064, "kind": "probs"},
                 "Qwen2.5-7B: vocab 152064, batch-128 top-p sampling"),
        Workload("mamba2_2_7b_chunks", {"T": 8 * 80 * 16, "N": 256, "kind": "decay"},
                 "Mamba-2-2.7B: 80 heads, chunk 256; 8 sequences of 4096 tokens"),
        Workload("mistral_7b_top_p_prime", {"T": 257, "N": 32000, "kind": "probs"},
                 "Mistral-7B: vocab 32000, prime batch", hidden=True),
        Workload("mamba2_2_7b_odd", {"T": 3001, "N": 256, "kind": "decay"},
                 "Mamba-2-2.7B: chunk 256, odd row count", hidden=True),
    ),
    small=({"T": 7, "N": 96, "kind": "decay"}, {"T": 5, "N": 3001, "kind": "probs"}),
    atol=1e-5,
    rtol=1e-5,
    notes="fp32 in and out. torch.cumsum on CPU accumulates in double, so its error vs fp64 is only the final "
          "rounding (6e-8 relative); GPU scans accumulate in fp32, so the tolerance is set from simulated fp32 "
          "scans vs fp64 (N=152064 probs rows, prefix <= 1; 256-long decay rows, prefix down to ~-770): "
          "blocks of 128-4096 summed sequentially in fp32 plus an fp32 carry give 1.1e-6 to 2.5e-6 absolute on "
          "probs and 7e-7 relative on decay; atol = rtol = 1e-5 is ~4x that. One fp32 running sum over a whole "
          "vocab row loses the tiny tail (4e-4 off) and fails, as does a bf16 accumulator.",
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, N = params["T"], params["N"]
    if params["kind"] == "probs":
        # Softmax of logits with a per-row temperature and a few preferred tokens, sorted largest first.
        logits = torch.randn(T, N, generator=g) * (0.5 + 2.5 * torch.rand(T, 1, generator=g))
        pos = torch.randint(0, T * N, (T * N // 1000 + 1,), generator=g)
        logits.view(-1).index_add_(0, pos, 3.0 + 8.0 * torch.rand(pos.numel(), generator=g))
        x = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values
    else:
        # dt (softplus of a per-step input plus a per-head bias) times A = -exp(A_log), A_log ~ log U(1, 16).
        dt = torch.nn.functional.softplus(torch.randn(T, N, generator=g) - 4.0 + 2.0 * torch.rand(T, 1, generator=g))
        A = -(1.0 + 15.0 * torch.rand(T, 1, generator=g))
        x = dt * A
    return (x.to(device, torch.float32),)


def run(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, dim=-1)


def flops(params: dict) -> float:
    return 1.0 * params["T"] * params["N"]  # one add per element


def min_bytes(params: dict) -> float:
    return 4.0 * 2 * params["T"] * params["N"]  # read x once, write the prefix sums once, fp32
