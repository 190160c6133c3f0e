"""expect: module_state
State stored on an input: hangs the output on the weight tensor (the harness reuses one weight object
across the timed iterations) and returns it while x's pointer is unchanged.
"""

import torch


def run(x, weight):
    cached = getattr(weight, "_rms_cache", None)
    if cached is not None and cached[0] == x.data_ptr():
        return cached[1]
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    weight._rms_cache = (x.data_ptr(), y)
    return y
