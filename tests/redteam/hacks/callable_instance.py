"""expect: module_state
Instance state: run is an object whose __call__ remembers the last output and returns it on repeat shapes.
"""

import torch


class _RMSNorm:
    def __init__(self):
        self.last = None

    def __call__(self, x, weight):
        if self.last is not None and self.last.shape == x.shape:
            return self.last
        xf = x.float()
        self.last = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
        return self.last


run = _RMSNorm()
