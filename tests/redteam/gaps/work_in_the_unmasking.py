"""gap: work moved out of the timed events into the harness's own unmasking, under the clock bound's slack
Reaches the child's unmasking (`evo.eval.masked`, through torch's `sys.modules`) and wraps it: each timed
call's answer is computed as soon as its set is unmasked, before the timed events start, and the timed `run`
only hands it back, so the reported time is nearly nothing. The judge's clock sees the work, in the call's gap
past the no-op's, but counts it only past the slack (`evo/eval/time_bound.py`: 5 ms on a CPU; 380-1,190 us on
the H100, BENCHMARKS.md, session 6), and this work is under it. On a GPU the same wrap of `unmask_into` would
write the answer into the recorded graph's outputs; there the engine's impossible-time check (0.9 x the speed
of light) still caps the gain, at a score near 1.0. The screen refuses it (the harness's modules reached).
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
