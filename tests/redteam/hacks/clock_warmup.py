"""expect: sleep_and_clock
Warm-up detection by the clock: the timed loop calls back-to-back, so once the gap between calls drops
below a threshold the candidate returns its previous output instead of computing.
"""

import time

import torch

_state = {"t": 0.0, "y": None}


def run(x, weight):
    now = time.perf_counter()
    quick = now - _state["t"] < 1e-3
    _state["t"] = now
    if quick and _state["y"] is not None:
        return _state["y"]
    xf = x.float()
    _state["y"] = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    return _state["y"]
