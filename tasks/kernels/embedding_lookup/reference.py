"""Embedding lookup: out[t] = table[ids[t]], the first op of every language model (pure data movement)."""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("llama3_8b_prefill", {"T": 8192, "V": 128256, "D": 4096},
                 "Llama-3-8B: vocab 128256 x hidden 4096, 8192-token prefill"),
        Workload("mistral_7b_prefill", {"T": 16384, "V": 32000, "D": 4096},
                 "Mistral-7B: vocab 32000 x hidden 4096, 16384 tokens"),
        Workload("llama3_8b_decode", {"T": 256, "V": 128256, "D": 4096}, "Llama-3-8B: batch-256 decode"),
        Workload("qwen2_5_7b_odd", {"T": 3001, "V": 152064, "D": 3584},
                 "Qwen2.5-7B: vocab 152064 x hidden 3584, odd T", hidden=True),
        Workload("mistral_7b_prime", {"T": 1021, "V": 32000, "D": 4096}, "Mistral-7B: prime T", hidden=True),
    ),
    small=({"T": 7, "V": 50, "D": 96}, {"T": 33, "V": 1000, "D": 200}),
    atol=0.0,
    rtol=0.0,
    notes="Exact: the output is a copy of table rows (bf16), so reference_error vs fp64 is 0 and any candidate "
          "must match bit for bit.",
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, V, D = params["T"], params["V"], params["D"]
    # Token ids: mostly uniform over the vocabulary, a quarter from a few hundred frequent tokens (repeats).
    frequent = torch.randint(0, V, (min(V, 300),), generator=g)
    ids = torch.where(torch.rand(T, generator=g) < 0.25,
                      frequent[torch.randint(0, frequent.numel(), (T,), generator=g)],
                      torch.randint(0, V, (T,), generator=g))
    # The table: every row distinct (a random base row times a per-row scale), built on the device from
    # seeded CPU pieces so that a 1 GB table is quick to make.
    base = torch.randn(min(V, 4096), D, generator=g) * (1.0 + 3.0 * (torch.rand(D, generator=g) > 0.99))
    pick = torch.randint(0, base.shape[0], (V,), generator=g)
    scale = 0.02 * torch.exp(0.5 * torch.randn(V, 1, generator=g))
    base, pick, scale = base.to(device, torch.bfloat16), pick.to(device), scale.to(device, torch.bfloat16)
    table = base[pick] * scale
    return ids.to(device), table


def run(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.embedding(ids, table)


def flops(params: dict) -> float:
    return 1.0 * params["T"]  # one address computation (id * D) per token; the op moves data, no arithmetic


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 8.0 * T + 2.0 * 2 * T * D  # read the int64 ids and the T gathered rows once, write T rows once (bf16)
