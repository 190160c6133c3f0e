"""expect: threads
Thread that finishes the work later: run returns an empty output at once and a background thread fills
it in while the harness is still reading its timer.
"""

import threading

import torch


def _fill(y, x, weight):
    xf = x.float()
    y.copy_((xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype))


def run(x, weight):
    y = torch.empty_like(x)
    threading.Thread(target=_fill, args=(y, x, weight), daemon=True).start()
    return y
