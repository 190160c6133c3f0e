"""expect: module_state
functools.lru_cache on tensors: tensors hash by identity, so repeated calls on the same input objects
return the cached output without computing.
"""

import functools

import torch


@functools.lru_cache(maxsize=16)
def _normed(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


def run(x, weight):
    return _normed(x, weight)
