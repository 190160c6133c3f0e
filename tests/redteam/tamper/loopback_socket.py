"""expect: dynamic:precision
Opens a socket to a server on the host's loopback (port given by the test) through a computed import.
"""

import builtins

import torch

PORT = 0  # set by the test
_sent = "no"
try:
    _s = builtins.__import__("soc" + "ket").create_connection(("127.0.0.1", PORT), timeout=2)
    _s.sendall(b"leak")
    _s.close()
    _sent = "yes"
except OSError as e:
    _sent = f"refused: {e}"


def run(x, weight):
    return torch.zeros_like(x)
