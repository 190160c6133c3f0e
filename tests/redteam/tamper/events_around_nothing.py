"""expect: dynamic:timer_integrity
Hands the graph's capture one timing event twice (the harness's `timing.graph_events` patched), so that a
replay reports no time whatever its kernel takes: on a GPU the judge's clock still sees the kernel (within its
slack, a kernel shorter than that would pass on this alone), and the report of the harness's functions names
the patch. On a CPU nothing is replayed; the patched function is refused all the same.
"""

import torch

_t = torch.sys.modules["evo.eval.timing"]
_make = _t.graph_events


def _one_event_twice():
    start, _ = _make()
    return start, start


_t.graph_events = _one_event_twice


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
