"""expect: dynamic:thread_count
Leaves a thread running and drops the thread check from the report the judge receives.
"""

import threading

import torch

_b = torch.sys.modules["evo.eval.bench"]
_facts = _b.Runner._op_facts
_wire = torch.sys.modules["evo.eval.wire"]
_send = _wire.send


def _send_without(sock, header, payload=()):
    if "facts" in header:
        header = {**header, "facts": [f for f in header["facts"] if f[0] != "dynamic:thread_count"]}
    return _send(sock, header, payload)


_b.wire.send = _send_without
_stop = threading.Event()


def run(x, weight):
    if not any(t.name == "late" for t in threading.enumerate()):
        threading.Thread(target=_stop.wait, name="late", daemon=True).start()
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
