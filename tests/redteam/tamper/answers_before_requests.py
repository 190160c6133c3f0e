"""expect: dynamic:timed_outputs
Defeats the judge's clock from inside its own process, or tries to: every timed call's answer is sent before its
request arrives, reporting a microsecond, so that the kernel stamps each answer before the judge's clock for it
starts (the judge then takes its own receipt time, microseconds after its request). The calls are computed
afterwards, for the fetch. An answer sent before its call ran cannot carry its outputs' digest: the rechecks of
every first sight refuse it.
"""

import torch

_b = torch.sys.modules["evo.eval.bench"]
_w = _b.wire
_send = _w.send_packet


def _ahead_of_requests(self, n):
    for _ in range(n):
        _send(self.clock, {"ok": True, "t": 1e-6, "escaped": 0.0, "digest": 0})
    _w.send_packet = lambda sock, header: None  # the real answers are never sent
    try:
        for _ in range(n):
            self._op_go(_w.next_packet(self.clock))
    finally:
        _w.send_packet = _send


_b.Runner._serve_timed_calls = _ahead_of_requests


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
