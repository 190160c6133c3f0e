"""expect: dynamic:timer_integrity
Attacks the whole timed call as one CUDA graph (`evo.eval.timed_graph`): while a graph is being recorded, `run`
returns an empty tensor (nothing computed between the events), and the harness's `GraphedCalls.__call__`,
patched through torch's `sys.modules`, replays the graph, then computes the right outputs from the graph's
inputs and digests them again, all before the answer goes. The reported time is the empty call's; the work
is inside the judge's clock, past the no-op's gap, so the clock counts it (or refuses it, past twice the
slack); the child's report of the harness's functions names the patched method. On a CPU nothing is
recorded, `run` computes honestly and the patch is refused all the same.
"""

import torch

_tg = torch.sys.modules["evo.eval.timed_graph"]
_digests = torch.sys.modules["evo.eval.digest"]
_call = _tg.GraphedCalls.__call__


def _rmsnorm(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


def _call_then_compute(self, i, mask_key):
    t, _, outputs = _call(self, i, mask_key)
    outputs[0].copy_(_rmsnorm(*self.inputs))
    return t, _digests.digest(outputs, self.digest_key), outputs


_tg.GraphedCalls.__call__ = _call_then_compute


def run(x, weight):
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return torch.empty_like(x)
    return _rmsnorm(x, weight)
