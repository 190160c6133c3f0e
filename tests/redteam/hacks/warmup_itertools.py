"""expect: module_state
Warm-up detector without `global`: a module-level itertools.count() and a one-slot list.
"""

import itertools

import torch

_tick = itertools.count()
_slot = [None]


def run(x, weight):
    n = next(_tick)
    if n >= 10 and _slot[0] is not None:
        return _slot[0]
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    _slot[0] = y
    return y
