"""Top-k along the last dimension, as an MoE router picks each token's experts from its logits.

`run(logits, k)` returns (values, indices) of the k largest logits per row, sorted by value, largest first (torch.topk).
Inputs are tie-free by construction (each row holds distinct bf16 values), so indices are unambiguous
and are compared exactly, like the values.
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("mixtral_8x7b_prefill", {"T": 16384, "E": 8, "K": 2}, "Mixtral 8x7B: 8 experts, top-2"),
        Workload("deepseek_v3_prefill", {"T": 16384, "E": 256, "K": 8}, "DeepSeek-V3: 256 routed experts, top-8"),
        Workload("qwen3_30b_a3b_prefill", {"T": 16384, "E": 128, "K": 8}, "Qwen3-30B-A3B: 128 experts, top-8"),
        Workload("qwen1_5_moe_prime", {"T": 1021, "E": 60, "K": 4}, "Qwen1.5-MoE-A2.7B: 60 experts, top-4, prime T",
                 hidden=True),
        Workload("deepseek_v2_lite_odd", {"T": 3001, "E": 64, "K": 6}, "DeepSeek-V2-Lite: 64 routed experts, top-6",
                 hidden=True),
    ),
    small=({"T": 7, "E": 60, "K": 4}, {"T": 33, "E": 200, "K": 8}),
    atol=0.0,
    rtol=0.0,
    notes="Exact: selection does no arithmetic, and the inputs have no ties, so values (bf16) and indices "
          "(int64) must equal torch.topk's. reference_error vs fp64 is 0.",
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, int]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, E = params["T"], params["E"]
    # E distinct bf16 values drawn from a normal distribution (duplicates after rounding dropped) ...
    pool = torch.unique(torch.randn(16 * E + 64, generator=g).to(torch.bfloat16))
    pool = pool[torch.randperm(pool.numel(), generator=g)[:E]].float()
    assert pool.numel() == E
    # ... shuffled independently in every row, and scaled by a per-row power of two (exact, so still distinct).
    perm = torch.argsort(torch.rand(T, E, generator=g), dim=-1)
    scale = torch.exp2(torch.randint(-2, 3, (T, 1), generator=g).float())
    logits = pool[perm] * scale
    return logits.to(device, torch.bfloat16), params["K"]


def run(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, indices = torch.topk(logits, k, dim=-1, largest=True, sorted=True)
    return values, indices


def flops(params: dict) -> float:
    return 1.0 * params["T"] * params["E"]  # one comparison per logit (selection has no arithmetic)


def min_bytes(params: dict) -> float:
    T, E, K = params["T"], params["E"], params["K"]
    return 2.0 * T * E + T * K * (2.0 + 8.0)  # read bf16 logits; write bf16 values and int64 indices
