"""expect: dynamic:timed_outputs
Times a cheap, wrong kernel and writes the right values into the timed outputs before they are fetched.
"""

import torch

_b = getattr(torch, "s" + "ys").modules["evo.eval.bench"]
_setup, _go, _fetch = _b.Runner._op_time_setup, _b.Runner._op_go, _b.Runner._op_fetch
_unmask = _b.masking.unmask
_state = {"cheap": False, "w": None, "call": None, "seen": {}}


def _right(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


def _cheaply(op):
    def patched(self, h):
        _state["cheap"], _state["call"] = True, h.get("i")
        _state["w"] = h.get("w", _state["w"])  # time_setup names the workload its calls are of
        try:
            return op(self, h)  # the warm-up and the graph's capture too: a replay runs what was captured
        finally:
            _state["cheap"] = False
    return patched


def _unmask_seen(masked, key, device):  # each timed call's inputs, kept to put its outputs right later
    inputs = _unmask(masked, key, device)
    _state["seen"][(_state["w"], _state["call"])] = tuple(x.clone() for x in inputs)
    return inputs


def _fetch_fixed(self, h):
    for key, outs in list(self._kept.items()):
        x, weight = _state["seen"][key]
        outs[0].copy_(_right(x, weight))
    return _fetch(self, h)


_b.Runner._op_time_setup, _b.Runner._op_go = _cheaply(_setup), _cheaply(_go)
_b.Runner._op_fetch, _b.masking.unmask = _fetch_fixed, _unmask_seen


def run(x, weight):
    if _state["cheap"]:
        return x * 1.0  # wrong, and fast
    return _right(x, weight)
