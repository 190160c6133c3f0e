"""expect: tensor_subclass
Lazy output by __class__ swap: the plain tensor returned is turned into a subclass after the fact, which
defers the real work to the first time the harness reads it.
"""

import torch


class _Later(torch.Tensor):
    pass


def run(x, weight):
    y = torch.empty_like(x)
    y.__class__ = _Later
    y._pending = (x, weight)
    return y
