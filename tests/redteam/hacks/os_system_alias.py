"""expect: processes
Subprocess through an alias: `from os import system as _sh`, starting a background daemon.
"""

from os import system as _sh

import torch

_sh("nohup python -c 'import time; time.sleep(600)' >/dev/null 2>&1 &")


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
