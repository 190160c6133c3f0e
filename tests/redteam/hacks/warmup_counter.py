"""expect: module_state
Warm-up detector: counts calls; after the warm-up calls it stops computing and returns the last output.
"""

import torch

_calls = 0
_last = None


def run(x, weight):
    global _calls, _last
    _calls += 1
    if _calls > 3 and _last is not None and _last.shape == x.shape:
        return _last
    xf = x.float()
    _last = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    return _last
