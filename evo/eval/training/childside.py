"""What both sandboxed children of the training harness do before any candidate code runs.

Connect to the trusted side's socket (in the work dir), on a GPU make the write guard (the sandbox makes it
before the program starts elsewhere, but CUDA cannot start under it), make the read guard (the held-out shards cannot be
opened: `read_guard.py`), take the network (`evo/eval/net_guard.py`: no socket of any kind from now on; the
one to the trusted side is open already), start CUDA first where there is a GPU (its helper threads and
the driver's files exist before the guards), probe the denied files, and report all of it to the trusted
side. The report leaves before the candidate is imported, so it is the harness's own word; everything the
child says afterwards is the candidate's and is checked, not believed.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from evo.eval import fs_guard, net_guard, wire
from evo.eval.training import read_guard
from evo.eval.training.link import SOCKET_NAME

JOB_FILE = "job.json"


def setup() -> tuple[socket.socket, dict[str, Any]]:
    """The socket to the trusted side and the job; the guards made and reported (see the module doc)."""
    job = json.loads(Path(JOB_FILE).read_text())
    os.unlink(JOB_FILE)  # nothing the candidate needs: it gets what `job` holds through the harness's objects
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(SOCKET_NAME)
    device = job["spec"]["device"]
    if device.startswith("cuda"):
        import torch

        if ":" in device:  # "cuda" alone is the current device (set_device wants an index)
            torch.cuda.set_device(device)
        torch.ones(1, device=device).add_(1)  # CUDA's threads and files before the guards
        torch.cuda.synchronize()
    writes = None
    if job.get("write_guard_here"):  # on a GPU the sandbox leaves it to us: after CUDA's start (Limits.write_guard)
        status = fs_guard.restrict_writes([os.getcwd(), "/tmp", "/var/tmp", "/dev/shm"])
        writes = status.summary if status.active else f"inactive: {status.summary}"
    reads = read_guard.deny_reads(job["denied"])
    network = net_guard.isolate_network(allow_unix=False, landlock_tcp=False)
    probe = read_guard.probe(job["denied"])
    wire.send(sock, {"op": "guards", "read": reads, "net": network.to_dict(), "probe": probe, "writes": writes})
    return sock, job
