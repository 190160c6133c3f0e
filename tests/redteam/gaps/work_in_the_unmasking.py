"""gap: work moved out of the timed events into the harness's own unmasking, under the clock bound's slack
`tamper/unmasking_does_the_work.py` (each timed answer computed inside the child's unmasking, before the events,
the reported time nearly nothing), with the child's final report forged as in `forged_evidence.py`, so that
the changed `masked.unmask` is not reported. The judge's clock sees the work, in the call's gap past the
no-op's, but counts it only past the slack (`evo/eval/time_bound.py`: 5 ms on a CPU; 380-1,190 us on the H100,
BENCHMARKS.md, session 6), and this work is under it. On a GPU the whole timed call is one graph now
(`evo/eval/timed_graph.py`): the unmasking is a kernel inside it, this wrap is never called, and the candidate
computes honestly. The same idea there patches the graph's call to put the outputs right after the replay
(`tamper/work_after_the_replay.py`, refused by the clock on the H100 in session 8, its work past twice the slack);
work under the slack (410-540 us at the median) with a forged report would still pass, capped by the engine's
impossible-time check (0.9 x the speed of light). The screen refuses it (the harness's modules reached).
"""

import torch

_masked = torch.sys.modules["evo.eval.masked"]
_wire = torch.sys.modules["evo.eval.wire"]
_unmask, _send = _masked.unmask, _wire.send
_ready = {}


def _rmsnorm(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


def _unmask_and_answer(masked, key, device):
    inputs = _unmask(masked, key, device)
    _ready[id(inputs[0])] = _rmsnorm(*inputs)  # outside the events, inside the judge's clock
    return inputs


def _all_passed(sock, header, payload=()):
    if "facts" in header:
        header = {**header, "facts": [[f[0], True, ""] for f in header["facts"]]}
    return _send(sock, header, payload)


_masked.unmask, _wire.send = _unmask_and_answer, _all_passed


def run(x, weight):
    done = _ready.pop(id(x), None)
    return done if done is not None else _rmsnorm(x, weight)
