"""expect: dynamic:precision
Reaches the harness through another module's `sys`, makes every check report pass, and returns zeros.
"""

import os

import torch

_h = os.sys.modules["evo.eval." + "integrity"]
_h.classify_mismatch = lambda reason, hidden: "dynamic:nothing"
_b = os.sys.modules["evo.eval." + "bench"]
_facts = _b.Runner._op_facts


def _quiet(self, h):
    self.before = None  # the report lists no check at all
    return _facts(self, h)


_b.Runner._op_facts = _quiet


def run(x, weight):
    return torch.zeros_like(x)
