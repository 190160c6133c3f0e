"""expect: dynamic:timed_outputs
Times a cheap, wrong kernel and writes the right values into the timed outputs before they are fetched.
"""

import torch

_b = getattr(torch, "s" + "ys").modules["evo.eval.bench"]
_go, _fetch = _b.Runner._op_go, _b.Runner._op_fetch
_state = {"cheap": False}


def _right(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


def _go_cheap(self, h):
    _state["cheap"] = True
    try:
        return _go(self, h)
    finally:
        _state["cheap"] = False


def _fetch_fixed(self, h):
    for key, outs in list(self._kept.items()):
        x, weight = self._sets[0] if self._sets else self.data.inputs_of(
            self.data.workload(key[0]), self.data.timing_seeds[key[0]][key[1] % len(self.data.timing_seeds[key[0]])], self.device)
        outs[0].copy_(_right(x, weight))
    return _fetch(self, h)


_b.Runner._op_go, _b.Runner._op_fetch = _go_cheap, _fetch_fixed


def run(x, weight):
    if _state["cheap"]:
        return x * 1.0  # wrong, and fast
    return _right(x, weight)
