"""expect: side_streams
Side-stream escape through `from torch.cuda import Stream as ...`, so `torch.cuda.Stream` never appears.
"""

import torch
from torch.cuda import Stream as _Queue
from torch.cuda import stream as _on


def run(x, weight):
    q = _Queue()
    with _on(q):
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    return y
