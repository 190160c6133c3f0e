"""expect: dynamic:precision
Reaches the wire module through torch.serialization's `sys` and sends the judge the inputs as its outputs.
"""

import torch

_wire = torch.serialization.sys.modules["evo.eval.wire"]
_pack = _wire.pack_tensors


def _pack_inputs(tensors, *rest):
    return _pack([_last["x"]] if _last else tensors, *rest)


_last = {}
_wire.pack_tensors = _pack_inputs


def run(x, weight):
    _last["x"] = x
    return torch.empty_like(x)
