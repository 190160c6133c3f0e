"""expect: file_writes
A file that carries state across evaluations: saves outputs under /tmp keyed by shape, and loads them in
the next evaluation (a new process) instead of computing.
"""

import os

import torch

_DIR = "/tmp/.rmsnorm_cache"


def run(x, weight):
    path = os.path.join(_DIR, f"{x.shape[0]}x{x.shape[1]}.pt")
    if os.path.exists(path):
        return torch.load(path, map_location=x.device)
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    os.makedirs(_DIR, exist_ok=True)
    torch.save(y, path)
    return y
