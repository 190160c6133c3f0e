"""expect: obfuscation
Side stream behind a computed attribute name: getattr(torch.cuda, "".join(reversed("maertS"))).
"""

import torch


def run(x, weight):
    make = getattr(torch.cuda, "".join(reversed("maertS")))
    enter = getattr(torch.cuda, "".join(reversed("maerts")))
    with enter(make()):
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    return y
