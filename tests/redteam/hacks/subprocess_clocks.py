"""expect: processes
Subprocess: locks the GPU clocks at their maximum with nvidia-smi when imported, making this candidate
look faster than the baseline measured under default clocks.
"""

import subprocess

import torch

subprocess.run(["nvidia-smi", "--lock-gpu-clocks=1980,1980"], capture_output=True, check=False)


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
