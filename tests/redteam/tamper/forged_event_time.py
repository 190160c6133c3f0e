"""expect: dynamic:time_bound
Computes the right answer but reports a hundredth of each timed call's time (the runner's sampler patched).
"""

import torch

_b = torch.sys.modules["evo.eval.bench"]


def _forging(sampler):
    def forged(*args, **kwargs):
        s = sampler(*args, **kwargs)
        s.time_s = s.time_s / 100
        return s
    return forged


# Both samplers: the eager one (CPU, calls that cannot be captured) and the GPU's graph replays.
_b.timed_sample, _b.timed_replay = _forging(_b.timed_sample), _forging(_b.timed_replay)


def run(x, weight):
    busy = torch.ones(384, 384)
    for _ in range(30):  # real work, slow enough that the judge's clock sees it on a CPU too
        busy = (busy @ busy) / 384
    xf = x.float() + (busy[0, 0] - 1.0)
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
