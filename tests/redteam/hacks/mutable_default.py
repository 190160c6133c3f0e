"""expect: module_state
Mutable default argument as a cache: `_memo={}` is created once and shared by every call.
"""

import torch


def run(x, weight, _memo={}):  # noqa: B006
    key = (x.shape, x.data_ptr())
    if key not in _memo:
        xf = x.float()
        _memo[key] = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    return _memo[key]
