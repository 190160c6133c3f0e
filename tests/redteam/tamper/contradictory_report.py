"""expect: dynamic:timer_integrity
Patches a function the harness trusts, then reports the check twice: once failed, once passed.
"""

import torch

_wire = torch.sys.modules["evo.eval.wire"]
_send = _wire.send
torch.cuda.synchronize = torch.cuda.synchronize  # a rebinding: the same object, but the report is forged
_orig_equal = torch.equal
torch.equal = lambda a, b: _orig_equal(a, b)


def _send_both(sock, header, payload=()):
    if "facts" in header:
        header = {**header, "facts": [*header["facts"], ["dynamic:timer_integrity", True, ""]]}
    return _send(sock, header, payload)


torch.sys.modules["evo.eval.bench"].wire.send = _send_both


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
