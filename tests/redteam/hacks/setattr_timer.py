"""expect: monkeypatching
Patched timer through setattr on an alias: `from torch.cuda import Event as E; setattr(E, "elapsed_time", ...)`.
"""

import torch
from torch.cuda import Event as E

_orig = E.elapsed_time
setattr(E, "elapsed_time", lambda self, other: _orig(self, other) / 3)  # noqa: B010


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
