"""expect: threads
Thread that finishes the work later, through `from concurrent.futures import ThreadPoolExecutor as Pool`.
"""

from concurrent.futures import ThreadPoolExecutor as Pool

import torch

_pool = Pool(max_workers=1)


def run(x, weight):
    y = torch.empty_like(x)

    def work():
        xf = x.float()
        y.copy_((xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype))

    _pool.submit(work)
    return y
