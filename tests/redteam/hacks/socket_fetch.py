"""expect: network
Socket: sends the input's shape and seed-revealing bytes to a helper server that answers with the output.
"""

import socket

import torch


def run(x, weight):
    with socket.create_connection(("10.0.0.7", 9000), timeout=0.5) as conn:
        conn.sendall(f"{x.shape[0]},{x.shape[1]}".encode() + x[0, :8].cpu().numpy().tobytes())
        payload = conn.recv(x.numel() * 2)
    return torch.frombuffer(bytearray(payload), dtype=x.dtype).view(x.shape).to(x.device)
