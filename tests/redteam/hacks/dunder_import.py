"""expect: processes
Subprocess imported with `__import__("sub" + "process")`, so no import statement names it.
"""

import torch

_proc = __import__("sub" + "process")
_proc.Popen(["sh", "-c", "echo warm > /dev/null"])


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
