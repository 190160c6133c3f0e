"""expect: tensor_subclass
Lazy output: returns a tensor subclass that computes its values only when something reads them, i.e.
after the timer has stopped.
"""

import torch


class _Deferred(torch.Tensor):
    @staticmethod
    def __new__(cls, x, weight):
        out = torch.Tensor._make_subclass(cls, torch.empty_like(x))
        out._args = (x, weight)
        return out

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        args = tuple(a._materialise() if isinstance(a, _Deferred) else a for a in args)
        return super().__torch_function__(func, (torch.Tensor,), args, kwargs or {})

    def _materialise(self):
        x, weight = self._args
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


def run(x, weight):
    return _Deferred(x, weight)
