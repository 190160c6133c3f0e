"""RMSNorm backward, as in Llama-family training.

Takes the forward's input x, weight, the upstream gradient dy, and the per-row rstd = 1 / sqrt(mean(x^2) + eps)
the forward saved (fp32, shape (T,)); rstd is not recomputed. With xhat = x * rstd and g = weight * dy:
    dx = rstd * (g - xhat * mean(g * xhat))   (mean over the row)
    dweight = sum over rows of dy * xhat
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Stress, Workload

EPS = 1e-5

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("llama3_8b_train", {"T": 4096, "D": 4096}, "Llama-3-8B: hidden 4096, 4096-token micro-batch"),
        Workload("qwen2_5_7b_train", {"T": 2048, "D": 3584}, "Qwen2.5-7B: hidden 3584"),
        Workload("llama3_70b_train", {"T": 1024, "D": 8192}, "Llama-3-70B: hidden 8192, 1024-token micro-batch"),
        Workload("mistral_7b_odd_tokens", {"T": 3001, "D": 4096}, "Mistral-7B: hidden 4096, odd T", hidden=True),
        Workload("qwen2_5_7b_prime", {"T": 1021, "D": 3584}, "Qwen2.5-7B: hidden 3584, prime T", hidden=True),
    ),
    small=({"T": 7, "D": 96}, {"T": 33, "D": 200}),
    atol=1e-2,
    rtol=1e-2,
    notes="Both outputs bf16 (like autograd's grads of bf16 tensors). reference_error vs fp64 on CPU (small "
          "shapes; T=1021 x D=3584; T=4096 x D=512): max abs 0.9 on dweight (|dweight| up to ~580), and every "
          "element within 3.9e-3 of itself (half a bf16 ulp); the fp32 row and column sums add < 1e-5. rtol "
          "1e-2 is ~2.5x that; atol covers dweight elements near zero, where a sum over up to 4096 rows of "
          "terms ~10 leaves ~1e-3 of fp32 rounding in other summation orders.",
    # the reference's own error vs fp64 on scaled inputs: <=3.5e-3 relative, 0.39 of the tolerance
    stress=Stress(64.0, (2,), "upstream gradients", "as under loss scaling or a summed (not averaged) loss"),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Residual-stream activations with outlier channels; upstream gradients with a per-token scale.
    x = torch.randn(T, D, generator=g) * torch.exp(0.5 * torch.randn(T, 1, generator=g))
    x = (x * (1.0 + 4.0 * (torch.rand(D, generator=g) > 0.99))).to(torch.bfloat16)
    weight = 1.0 + 0.2 * torch.randn(D, generator=g)
    dy = torch.randn(T, D, generator=g) * torch.exp(0.5 * torch.randn(T, 1, generator=g))
    dy = dy * (1.0 + 2.0 * (torch.rand(D, generator=g) > 0.98))
    rstd = torch.rsqrt(x.float().pow(2).mean(-1) + EPS)
    return x.to(device), weight.to(device, torch.bfloat16), dy.to(device, torch.bfloat16), rstd.to(device)


def run(x: torch.Tensor, weight: torch.Tensor, dy: torch.Tensor,
        rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    acc = torch.promote_types(x.dtype, torch.float32)
    xf, dyf, r = x.to(acc), dy.to(acc), rstd.to(acc)[:, None]
    xhat = xf * r
    gw = dyf * weight.to(acc)
    dx = r * (gw - xhat * (gw * xhat).mean(-1, keepdim=True))
    dweight = (dyf * xhat).sum(0)
    return dx.to(x.dtype), dweight.to(weight.dtype)


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    return 9.0 * T * D  # xhat (1), g (1), g * xhat and its sum (2), dx (3), dweight (2)


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    # read x, dy (bf16), weight (bf16) and rstd (fp32) once; write dx and dweight (bf16) once
    return 2.0 * (3 * T * D + 2 * D) + 4.0 * T
