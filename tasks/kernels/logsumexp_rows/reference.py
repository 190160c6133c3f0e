"""Log-sum-exp over the vocabulary for each row of logits: the normaliser of a cross-entropy loss or of sampling.

lse[r] = max(x[r]) + log(sum(exp(x[r] - max(x[r])))), bf16 logits in, fp32 out (as losses keep it).
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Stress, Workload

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("llama3_8b_vocab", {"T": 1024, "V": 128256}, "Llama-3-8B: vocab 128256, 1024 tokens"),
        Workload("qwen2_5_7b_vocab", {"T": 1024, "V": 152064}, "Qwen2.5-7B: vocab 152064, 1024 tokens"),
        Workload("mistral_7b_vocab", {"T": 4096, "V": 32000}, "Mistral-7B: vocab 32000, 4096 tokens"),
        Workload("llama3_8b_prime", {"T": 1021, "V": 128256}, "Llama-3-8B: vocab 128256, prime T", hidden=True),
        Workload("mistral_7b_odd", {"T": 3001, "V": 32000}, "Mistral-7B: vocab 32000, odd T", hidden=True),
    ),
    small=({"T": 7, "V": 96}, {"T": 33, "V": 3001}),
    atol=1e-5,
    rtol=1e-6,
    notes="fp32 output (~10 to 35). reference_error vs fp64 on CPU (small shapes; T=8 x V=152064; T=64 x V=32000): "
          "max abs 1.1e-6. Simulated fp32 alternatives: 1024 per-lane sums then a tree, 8.7e-7; one sequential "
          "fp32 sum over the row, 1e-4; exp rounded to bf16 before summing, 9e-4. atol 1e-5 + rtol 1e-6 (4e-5 at "
          "30) is ~10-20x the reference's error: it admits any fp32 summation order with a per-lane or tree "
          "reduction and rejects the last two.",
    # the reference's own error vs fp64 on scaled inputs: max abs 7.5e-6, 0.05 of the tolerance
    stress=Stress(8.0, (0,), "logits", "as from a sharp model or a low temperature"),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, V = params["T"], params["V"]
    # Logits with a per-row temperature and offset, and a few strongly preferred tokens per row.
    x = torch.randn(T, V, generator=g) * (0.5 + 3.0 * torch.rand(T, 1, generator=g))
    x = x + 4.0 * torch.randn(T, 1, generator=g)
    pos = torch.randint(0, T * V, (T * V // 1000 + 1,), generator=g)
    x.view(-1).index_add_(0, pos, 5.0 + 15.0 * torch.rand(pos.numel(), generator=g))
    return (x.to(device, torch.bfloat16),)


def run(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x.to(torch.promote_types(x.dtype, torch.float32)), dim=-1)


def flops(params: dict) -> float:
    return 4.0 * params["T"] * params["V"]  # max, subtract, exp, sum (the final log per row is negligible)


def min_bytes(params: dict) -> float:
    T, V = params["T"], params["V"]
    return 2.0 * T * V + 4.0 * T  # read bf16 logits once, write fp32 lse once
