"""Weight-only int8 linear layer (W8A16): y = x @ (W * scale[:, None])^T for int8 W with
per-output-channel scales."""

import torch

from evo.eval.kernel_spec import KernelSpec, Workload

SPEC = KernelSpec(
    category="quant",
    workloads=(
        Workload(
            "llama3_8b_gate_decode",
            {"T": 16, "N": 14336, "K": 4096},
            "Llama-3-8B: gate/up_proj 4096 -> 14336, batch-16 decode",
        ),
        Workload(
            "llama3_8b_down_prefill",
            {"T": 1024, "N": 4096, "K": 14336},
            "Llama-3-8B: down_proj 14336 -> 4096, 1024-token prefill",
        ),
        Workload("qwen2_5_7b_up", {"T": 256, "N": 18944, "K": 3584}, "Qwen2.5-7B: up_proj 3584 -> 18944"),
        Workload(
            "llama3_70b_qkv_odd",
            {"T": 37, "N": 10240, "K": 8192},
            "Llama-3-70B: fused qkv_proj 8192 -> 8192 + 2 * 1024, odd batch",
            hidden=True,
        ),
        Workload(
            "qwen2_5_7b_o_proj_prime",
            {"T": 509, "N": 3584, "K": 3584},
            "Qwen2.5-7B: o_proj, prime T",
            hidden=True,
        ),
    ),
    small=({"T": 5, "N": 40, "K": 72}, {"T": 19, "N": 33, "K": 100}),
    atol=1e-2,
    rtol=1e-2,
    notes=(
        "Outputs are ~N(0, 1). The reference (fp32 accumulation, one bf16 rounding) differs from fp64 by "
        "~2-4e-3 absolute on CPU (K 72 .. 4096), mostly the bf16 output rounding (2^-9 relative); "
        "atol = rtol = 1e-2 leaves ~3x for other summation orders and split-K."
    ),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, N, K = params["T"], params["N"], params["K"]
    # Activations with a few outlier channels; weights quantised per output row as a real quantiser would.
    x = torch.randn(T, K, generator=g) * (1.0 + 4.0 * (torch.rand(K, generator=g) > 0.99))
    w = torch.randn(N, K, generator=g) * torch.exp(0.3 * torch.randn(N, 1, generator=g)) / K**0.5
    scale = w.abs().amax(dim=1) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127)
    return x.to(device, torch.bfloat16), q.to(device, torch.int8), scale.to(device, torch.float32)


def run(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32  # float64 only in the tolerance check
    y = (x.to(acc) @ w.to(acc).T) * scale.to(acc)
    return y.to(x.dtype)


def flops(params: dict) -> float:
    T, N, K = params["T"], params["N"], params["K"]
    return 2.0 * T * N * K


def min_bytes(params: dict) -> float:
    T, N, K = params["T"], params["N"], params["K"]
    return 2.0 * T * K + 1.0 * N * K + 4.0 * N + 2.0 * T * N  # x bf16, W int8, scales fp32 in; y bf16 out
