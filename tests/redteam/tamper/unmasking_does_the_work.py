"""expect: dynamic:timer_integrity
Wraps the child's unmasking (`evo.eval.masked`, through torch's `sys.modules`) so that each timed call's answer
is computed as soon as its set is unmasked, before the timed events start; the timed `run` only hands it back,
and the reported time is nearly nothing. The judge's clock sees the work, but under its slack
(`evo/eval/time_bound.py`), so what refuses it is the child's report of the harness's functions (a changed
`masked.unmask`). `gaps/work_in_the_unmasking.py` forges that report as well, and passes.
"""

import torch

_masked = torch.sys.modules["evo.eval.masked"]
_unmask = _masked.unmask
_ready = {}


def _rmsnorm(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


def _unmask_and_answer(masked, key, device):
    inputs = _unmask(masked, key, device)
    _ready[id(inputs[0])] = _rmsnorm(*inputs)  # outside the events, inside the judge's clock
    return inputs


_masked.unmask = _unmask_and_answer


def run(x, weight):
    done = _ready.pop(id(x), None)
    return done if done is not None else _rmsnorm(x, weight)
