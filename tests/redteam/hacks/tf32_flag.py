"""expect: precision_flags
Precision downgrade through global flags: turns on TF32 and reduced-precision reductions, then computes
the sum of squares with a matmul against a ones vector.
"""

import torch

torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
torch.set_float32_matmul_precision("medium")


def run(x, weight):
    xf = x.float()
    ones = torch.ones(x.shape[-1], 1, device=x.device, dtype=torch.float32)
    ms = (xf * xf) @ ones / x.shape[-1]
    return (xf * torch.rsqrt(ms + 1e-5) * weight.float()).to(x.dtype)
