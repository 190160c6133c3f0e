"""gap: a unix socket bound to a path is reachable (only file permissions govern connecting to one)
Connects to a server's socket file (path given by the test) through a computed import and sends it data.
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
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
