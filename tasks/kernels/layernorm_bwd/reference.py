"""LayerNorm backward with weight and bias, as in GPT-NeoX / Falcon / Phi-2 training.

Takes the forward's input x, weight, the upstream gradient dy, and the per-row statistics the forward saved
(mean and rstd = 1 / sqrt(var + eps), fp32, shape (T,)); the statistics are not recomputed.
With xhat = (x - mean) * rstd and g = weight * dy:
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (means over the row)
    dweight = sum over rows of dy * xhat,   dbias = sum over rows of dy
"""

import torch

from evo.eval.kernel_spec import KernelSpec, Stress, Workload

EPS = 1e-5

SPEC = KernelSpec(
    category="single_op",
    workloads=(
        Workload("falcon_7b_train", {"T": 4096, "D": 4544}, "Falcon-7B: hidden 4544, 4096-token micro-batch"),
        Workload("gpt_neox_20b_train", {"T": 2048, "D": 6144}, "GPT-NeoX-20B: hidden 6144"),
        Workload("falcon_40b_train", {"T": 1024, "D": 8192}, "Falcon-40B: hidden 8192, 1024-token micro-batch"),
        Workload("phi_2_prime", {"T": 1021, "D": 2560}, "Phi-2: hidden 2560, prime T", hidden=True),
        Workload("gpt2_xl_odd", {"T": 3001, "D": 1600}, "GPT-2 XL: hidden 1600, odd T", hidden=True),
    ),
    small=({"T": 7, "D": 96}, {"T": 33, "D": 200}),
    atol=1e-2,
    rtol=1e-2,
    notes="All three outputs bf16 (like autograd's grads of bf16 tensors). reference_error vs fp64 on CPU (small "
          "shapes; T=1021 x D=2560; T=4096 x D=512): max abs 1.8 on dweight (|dweight| up to ~650), and every "
          "element within 3.9e-3 of itself (half a bf16 ulp); the fp32 row and column sums add < 1e-5. rtol "
          "1e-2 is ~2.5x that; atol covers dweight and dbias elements near zero, where a sum over up to 4096 "
          "rows of terms ~10 leaves ~1e-3 of fp32 rounding in other summation orders.",
    # the reference's own error vs fp64 on scaled inputs: <=3.2e-3 relative, 0.39 of the tolerance
    stress=Stress(64.0, (2,), "upstream gradients", "as under loss scaling or a summed (not averaged) loss"),
)


def make_inputs(params: dict, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    T, D = params["T"], params["D"]
    # Residual-stream activations: per-token scale and offset, outlier channels.
    x = torch.randn(T, D, generator=g) * torch.exp(0.5 * torch.randn(T, 1, generator=g))
    x = x * (1.0 + 6.0 * (torch.rand(D, generator=g) > 0.99)) + 0.3 * torch.randn(D, generator=g)
    x = (x + 2.0 * torch.randn(T, 1, generator=g)).to(torch.bfloat16)
    weight = 1.0 + 0.2 * torch.randn(D, generator=g)
    # Upstream gradients: per-token scale, heavier on a few channels.
    dy = torch.randn(T, D, generator=g) * torch.exp(0.5 * torch.randn(T, 1, generator=g))
    dy = dy * (1.0 + 2.0 * (torch.rand(D, generator=g) > 0.98))
    xf = x.float()
    mean = xf.mean(-1)
    rstd = torch.rsqrt(xf.var(-1, unbiased=False) + EPS)
    return (x.to(device), weight.to(device, torch.bfloat16), dy.to(device, torch.bfloat16),
            mean.to(device), rstd.to(device))


def run(x: torch.Tensor, weight: torch.Tensor, dy: torch.Tensor, mean: torch.Tensor,
        rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = torch.promote_types(x.dtype, torch.float32)
    xf, dyf, r = x.to(acc), dy.to(acc), rstd.to(acc)[:, None]
    xhat = (xf - mean.to(acc)[:, None]) * r
    gw = dyf * weight.to(acc)
    dx = r * (gw - gw.mean(-1, keepdim=True) - xhat * (gw * xhat).mean(-1, keepdim=True))
    dweight = (dyf * xhat).sum(0)
    dbias = dyf.sum(0)
    return dx.to(x.dtype), dweight.to(weight.dtype), dbias.to(weight.dtype)


def flops(params: dict) -> float:
    T, D = params["T"], params["D"]
    # xhat (2), g (1), sum g (1), g * xhat and its sum (2), dx (4), dweight (2), dbias (1)
    return 13.0 * T * D


def min_bytes(params: dict) -> float:
    T, D = params["T"], params["D"]
    # read x, dy (bf16), weight (bf16), mean and rstd (fp32) once; write dx, dweight, dbias (bf16) once
    return 2.0 * (3 * T * D + 3 * D) + 4.0 * 2 * T
