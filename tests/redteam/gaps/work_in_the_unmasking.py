"""gap: work moved out of the timed events into the harness's own unmasking, under the clock bound's slack
`tamper/unmasking_does_the_work.py` (each timed answer computed inside the child's unmasking, before the events,
the reported time nearly nothing), with the child's final report forged as in `forged_evidence.py`, so that
the changed `masked.unmask` is not reported. The judge's clock sees the work, in the call's gap past the
no-op's, but counts it only past the slack (`evo/eval/time_bound.py`: 5 ms on a CPU; 380-1,190 us on the H100,
BENCHMARKS.md, session 6), and this work is under it. On a GPU the same wrap of `unmask_into` would write the
answer into the recorded graph's outputs; there the engine's impossible-time check (0.9 x the speed of light)
still caps the gain, at a score near 1.0. The screen refuses it (the harness's modules reached).
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
