"""gap: the evidence only the candidate's process can give (threads, flags, files) is forged
Leaves a thread running, turns TF32 on, leaves a file, and reports every check passed. The judge cannot see
inside the process; docs/auditor.md says why none of this moves a score (outputs and times are judged outside).
"""

import threading

import torch

_wire = torch.sys.modules["evo.eval.wire"]
_send = _wire.send


def _all_passed(sock, header, payload=()):
    if "facts" in header:
        header = {**header, "facts": [[f[0], True, ""] for f in header["facts"]]}
    return _send(sock, header, payload)


_wire.send = _all_passed
torch.backends.cuda.matmul.allow_tf32 = True
open("left_behind.txt", "w").close()
_stop = threading.Event()
threading.Thread(target=_stop.wait, daemon=True).start()


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
