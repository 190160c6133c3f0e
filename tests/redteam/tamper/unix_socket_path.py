"""expect: dynamic:precision
Connects to a server's unix socket file (path given by the test; a Ray raylet's, say) and sends it data.
"""

import builtins

import torch

SOCKET_PATH = ""  # set by the test
_socket = builtins.__import__("soc" + "ket")
try:
    _s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    _s.connect(SOCKET_PATH)
    _s.sendall(b"leak")
    _s.close()
except OSError:
    pass


def run(x, weight):
    return torch.zeros_like(x)
