"""expect: module_state
Closure cache: a factory returns run with a private dict that survives between calls.
"""

import torch


def _make():
    memo = {}

    def run(x, weight):
        key = (x.data_ptr(), x.shape)
        if key in memo:
            return memo[key]
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
        memo[key] = y
        return y

    return run


run = _make()
