"""expect: dynamic:warmup_invariance
Defeats the timing plan from inside its own process: the runner's timed calls all use the first input set, so
every call after the first is a repeat answered from a cache (the median argument assumes the sets rotate).
The rotation is the child's word; what the judge holds it to is the rechecks, which compare a timed call's
outputs with the expected ones of the set that call should have used.
"""

import torch

_b = torch.sys.modules["evo.eval.bench"]
_go = _b.Runner._op_go
_cache = {}
_first = {}


def _go_first_set(self, h):
    self._sets = self._sets[:1]  # every call on set 0, unmasked with set 0's key (that of call 0)
    key = _first.setdefault(id(self._sets[0]), h["key"])
    return _go(self, {**h, "key": key})


_b.Runner._op_go = _go_first_set


def run(x, weight):
    key = (tuple(x.shape), float(x.view(-1)[0]), float(x.view(-1)[-1]))
    hit = _cache.get(key)
    if hit is None:
        xf = x.float()
        hit = _cache[key] = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
    return hit.clone()
