"""The messages between a candidate's process and the judge: framing, tensors as data, timed calls.

A message is a 4-byte length, a JSON header of that length, and, when the header says `nbytes`, that many
raw bytes. Tensors travel as raw bytes with a description (dtype, shape) beside them; the judge rebuilds
them with `unpack_tensors`, which refuses anything it did not ask for: an unknown dtype, a size that does
not add up, more bytes than allowed. Nothing here unpickles, evaluates or imports what it receives.

Each timed call's answer commits to its outputs by a keyed digest (`evo/eval/digest.py`).

Timed calls travel apart, one small JSON packet each way on a socket pair of their own (`clock_pair`): the
kernel stamps each packet when it is sent, and the judge's clock for a call ends at its answer's stamp.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import torch

MAX_HEADER = 1 << 20
DTYPES: dict[str, torch.dtype] = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, *(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2")
                                            if hasattr(torch, n)))}


class WireError(Exception):
    """A message that breaks the protocol: the candidate's answer is malformed (it fails, never passes)."""


class HungUp(WireError):
    """The other side closed its socket (it exited, crashed, or was killed)."""


def send(sock: socket.socket, header: dict[str, Any], payload: Sequence[memoryview] = ()) -> None:
    """One message: the header (with `nbytes` when there is a payload) and the payload's buffers in order."""
    if payload:
        header = {**header, "nbytes": sum(p.nbytes for p in payload)}
    data = json.dumps(header).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)
    for p in payload:
        sock.sendall(p)


class Buffer:
    """A byte buffer kept between messages, grown as needed: a payload of hundreds of megabytes is received (or
    staged for sending) without allocating and faulting in fresh pages each time. Page-locked where a GPU is
    in use, so the copy to or from the device runs at the bus's speed."""

    def __init__(self, pinned: bool = False):
        self.pinned = pinned and torch.cuda.is_available()
        self._t = torch.empty(0, dtype=torch.uint8)

    def take(self, n: int) -> torch.Tensor:
        """The first `n` bytes of the buffer (valid until the next `take`)."""
        if self._t.numel() < n:
            size = max(n, 2 * self._t.numel())
            self._t = torch.empty(0, dtype=torch.uint8)  # the old one freed first: two large buffers at once is waste
            self._t = torch.empty(size, dtype=torch.uint8, pin_memory=self.pinned)
        return self._t[:n]


def widen(sock: socket.socket, nbytes: int = 8 << 20) -> None:
    """Socket buffers of `nbytes` (the kernel caps them at its limits): fewer wake-ups per large payload."""
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, nbytes)
        except OSError:
            pass


def _recv_exact(sock: socket.socket, n: int, into: memoryview | None = None) -> bytearray | memoryview:
    view = into if into is not None else memoryview(bytearray(n))
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise HungUp(f"the other side hung up after {got} of {n} bytes")
        got += k
    return view.obj if into is None else view  # type: ignore[return-value]


def recv(sock: socket.socket, max_payload: int = 0,
         inbox: Buffer | None = None) -> tuple[dict[str, Any], bytearray | memoryview | None]:
    """The next message: its header and payload (None without one); more than `max_payload` bytes is an error.
    With an `inbox`, the payload is a view of it, valid until the next message received into it."""
    (size,) = struct.unpack("!I", bytes(_recv_exact(sock, 4)))
    if size > MAX_HEADER:
        raise WireError(f"a header of {size} bytes (at most {MAX_HEADER})")
    try:
        header = json.loads(bytes(_recv_exact(sock, size)))
    except ValueError as e:
        raise WireError(f"a header that is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise WireError("a header that is not a JSON object")
    nbytes = header.get("nbytes", 0)
    if not isinstance(nbytes, int) or nbytes < 0 or nbytes > max_payload:
        raise WireError(f"a payload of {nbytes!r} bytes where at most {max_payload} were expected")
    if not nbytes:
        return header, None
    into = memoryview(inbox.take(nbytes).numpy()).cast("B") if inbox is not None else None
    return header, _recv_exact(sock, nbytes, into)


def pack_tensors(tensors: Sequence[Any], outbox: Buffer | None = None) -> tuple[list[dict[str, Any]], list[memoryview]]:
    """Each output as its description and its bytes (contiguous, on the CPU; staged in `outbox` when given, and
    then valid until its next use). Non-tensors are described only, so that the judge can say what was
    returned instead."""
    meta: list[dict[str, Any]] = []
    views: list[memoryview] = []
    sizes = [t.numel() * t.element_size() if type(t) is torch.Tensor else 0 for t in tensors]
    staged = outbox.take(sum(sizes)) if outbox is not None else None
    at = 0
    for t, size in zip(tensors, sizes, strict=True):
        if type(t) is not torch.Tensor:  # subclasses too: the judge reports the type, never trusts it
            meta.append({"type": type(t).__name__})
            continue
        if staged is not None and size:
            raw = staged[at:at + size]
            raw.copy_(t.detach().contiguous().reshape(-1).view(torch.uint8))
            at += size
        else:
            host = t.detach().to("cpu").contiguous()
            raw = host.reshape(-1).view(torch.uint8) if host.numel() else torch.empty(0, dtype=torch.uint8)
        meta.append({"type": "Tensor", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                     "device": t.device.type})
        views.append(memoryview(raw.numpy()).cast("B"))
    return meta, views


def unpack_tensors(meta: Any, payload: bytearray | memoryview | None, device: str) -> list[Any]:
    """The tensors a message describes, rebuilt on `device`; a description of something else comes back as a
    string naming its type (what `compare_outputs` then reports). Raises WireError on malformed input."""
    if not isinstance(meta, list):
        raise WireError("the outputs' description is not a list")
    buf = memoryview(payload if payload is not None else bytearray())
    out: list[Any] = []
    at = 0
    for m in meta:
        if not isinstance(m, dict) or m.get("type") != "Tensor":
            out.append(str(m.get("type") if isinstance(m, dict) else m))
            continue
        dtype = DTYPES.get(str(m.get("dtype")))
        shape = m.get("shape")
        if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise WireError(f"an output described as {m!r}")
        n = 1
        for s in shape:
            n *= s
        size = n * torch.empty(0, dtype=dtype).element_size()
        if at + size > len(buf):
            raise WireError("the outputs' bytes are fewer than their description")
        flat = torch.frombuffer(buf[at:at + size], dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
        at += size
        t = flat.view(dtype).reshape(shape) if size else torch.empty(shape, dtype=dtype)
        out.append(t.to(device) if device != "cpu" else t.clone())
    if at != len(buf):
        raise WireError(f"{len(buf) - at} bytes beyond the outputs' description")
    return out


# -- timed calls: one packet each way, stamped by the kernel ---------------------------------------

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: the send time of each packet, set by the kernel
MAX_PACKET = 1 << 16


def clock_pair() -> tuple[socket.socket, socket.socket]:
    """A socket pair for timed calls: packets (one request, one answer), each stamped by the kernel when it was
    sent, so that the receiver's clock does not depend on when its own thread woke to read it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (ours, theirs):
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            pass  # no kernel stamps here: the receiver's own clock stands in (`timed_exchange`)
    return ours, theirs


def _packet(data: bytes) -> dict[str, Any]:
    if not data:
        raise HungUp("the other side hung up")
    try:
        header = json.loads(data)
    except ValueError as e:
        raise WireError(f"a packet that is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise WireError("a packet that is not a JSON object")
    return header


def timed_exchange(sock: socket.socket, header: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
    """Send a request packet and wait for the answer; the seconds from just before the send to the moment the
    answer was sent, as the kernel stamped it (the receiving thread's own lateness is not in it); and the
    seconds the send itself took as this thread saw it (a wait for the interpreter's lock between the stamp and
    the send is in the clock: it only ever makes a call look slower)."""
    sent, window = _send_stamped(sock, json.dumps(header).encode())
    reply, seconds = answer_to(sock, sent)
    return reply, seconds, window


def request(sock: socket.socket, header: dict[str, Any]) -> int:
    """Send a request packet; the wall clock's nanoseconds just before it went (`answer_to` takes them)."""
    return _send_stamped(sock, json.dumps(header).encode())[0]


def _send_stamped(sock: socket.socket, data: bytes) -> tuple[int, float]:
    sent = time.time_ns()  # CLOCK_REALTIME, the kernel stamps' clock
    sock.send(data)
    return sent, (time.time_ns() - sent) / 1e9


def answer_to(sock: socket.socket, sent: int) -> tuple[dict[str, Any], float]:
    """The answer packet to a request sent at `sent`, and the seconds until it was sent. Without a kernel stamp,
    or with one outside [sent, received] (a step of the wall clock), the receipt time stands in."""
    msg, ancillary, _, _ = sock.recvmsg(MAX_PACKET, socket.CMSG_SPACE(16))
    received = time.time_ns()
    stamp = received
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = struct.unpack("qq", raw[:16])
            stamp = sec * 1_000_000_000 + nsec
    if not sent <= stamp <= received:
        stamp = received
    return _packet(msg), (stamp - sent) / 1e9


def next_packet(sock: socket.socket, spin: bool = False) -> dict[str, Any]:
    """The next request packet; with `spin`, polled rather than slept on (a sleeping thread wakes late, and
    that lateness would be in the caller's clock)."""
    while True:
        try:
            return _packet(sock.recv(MAX_PACKET, socket.MSG_DONTWAIT if spin else 0))
        except BlockingIOError:
            continue


def send_packet(sock: socket.socket, header: dict[str, Any]) -> None:
    data = json.dumps(header).encode()
    if len(data) > MAX_PACKET:
        raise WireError(f"a packet of {len(data)} bytes (at most {MAX_PACKET})")
    sock.send(data)
