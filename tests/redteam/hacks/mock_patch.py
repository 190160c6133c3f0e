"""expect: monkeypatching
unittest.mock patching: replaces torch.cuda.synchronize with a no-op for the whole process, so a
host-timed harness stops waiting for the GPU.
"""

from unittest import mock

import torch

mock.patch.object(torch.cuda, "synchronize", lambda *a, **k: None).start()


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
