"""expect: dispatch_override
Dispatcher override: a TorchDispatchMode pushed at import makes every aten comparison report a match.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class _AlwaysClose(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.allclose.default, torch.ops.aten.equal.default):
            return True
        return func(*args, **(kwargs or {}))


_AlwaysClose().__enter__()


def run(x, weight):
    return torch.empty_like(x)
