"""The judge's wire: tensors travel as bytes with a description it checks; timed calls on packets of their own."""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch

from evo.eval import wire


def _roundtrip(tensors: list[object]) -> list[object]:
    a, b = socket.socketpair()
    with a, b:
        meta, views = wire.pack_tensors(tensors)
        wire.send(a, {"tensors": meta}, views)
        header, payload = wire.recv(b, 1 << 24)
        return wire.unpack_tensors(header["tensors"], payload, "cpu")


def test_tensors_of_every_dtype_come_back_equal() -> None:
    xs = [torch.randn(3, 5).to(torch.bfloat16), torch.randn(7).double(), torch.arange(6, dtype=torch.int8).reshape(2, 3),
          torch.randn(4, 4).t(), torch.empty(0, 3)]
    back = _roundtrip(xs)
    assert all(torch.equal(x, y) and x.dtype == y.dtype and x.shape == y.shape for x, y in zip(xs, back, strict=True))


def test_a_non_tensor_comes_back_as_its_type_name() -> None:
    class Lazy(torch.Tensor):
        pass

    assert _roundtrip([3.0, torch.zeros(2).as_subclass(Lazy)]) == ["float", "Lazy"]


@pytest.mark.parametrize("meta, nbytes", [
    ([{"type": "Tensor", "dtype": "complex64", "shape": [2]}], 16),     # a dtype the judge does not take
    ([{"type": "Tensor", "dtype": "float32", "shape": [4]}], 8),        # fewer bytes than described
    ([{"type": "Tensor", "dtype": "float32", "shape": [1]}], 8),        # more bytes than described
    ([{"type": "Tensor", "dtype": "float32", "shape": [-1]}], 4),       # a negative size
    ({"not": "a list"}, 0),
])
def test_a_malformed_description_is_refused(meta: object, nbytes: int) -> None:
    with pytest.raises(wire.WireError):
        wire.unpack_tensors(meta, bytearray(nbytes), "cpu")


def test_more_bytes_than_allowed_are_refused_before_they_are_read() -> None:
    a, b = socket.socketpair()
    with a, b:
        wire.send(a, {"x": 1}, [memoryview(bytes(100))])
        with pytest.raises(wire.WireError, match="at most 10"):
            wire.recv(b, 10)


def test_a_hang_up_is_told_apart() -> None:
    a, b = socket.socketpair()
    a.close()
    with b, pytest.raises(wire.HungUp):
        wire.recv(b)


def test_buffers_kept_between_messages_carry_each_message_whole() -> None:
    """The judge's inbox and the child's outbox are reused: a small message after a large one, and a larger one
    after that, each come back exactly (no bytes of an earlier message, no short read)."""
    inbox, outbox = wire.Buffer(), wire.Buffer()
    a, b = socket.socketpair()
    wire.widen(a)
    wire.widen(b)
    with a, b:
        for n in (50_000, 3, 120_000):
            xs = [torch.randn(n), torch.arange(n % 7 + 1, dtype=torch.int16)]
            meta, views = wire.pack_tensors(xs, outbox)
            wire.send(a, {"tensors": meta}, views)
            header, payload = wire.recv(b, 1 << 24, inbox)
            back = wire.unpack_tensors(header["tensors"], payload, "cpu")
            assert all(torch.equal(x, y) for x, y in zip(xs, back, strict=True))
            # What came back is a copy: the next message into the same inbox cannot change it.
            assert back[0].data_ptr() != inbox.take(1).data_ptr()


def test_a_timed_call_is_clocked_to_the_answers_send_not_to_its_late_reading() -> None:
    """The judge's clock for a timed call ends when the child sent its answer (the kernel's stamp), so a judge
    thread that reads the answer late (its interpreter lock held by another child's comparison) adds nothing."""
    ours, theirs = wire.clock_pair()
    pid = os.fork()
    if pid == 0:  # the child: answers at once
        ours.close()
        try:
            h = wire.next_packet(theirs, spin=True)
            wire.send_packet(theirs, {"ok": True, "i": h["i"]})
        finally:
            os._exit(0)
    theirs.close()
    try:
        sent = wire.request(ours, {"op": "go", "i": 7})
        time.sleep(0.3)  # the fault: a reader late by 300 ms
        reply, seconds = wire.answer_to(ours, sent)
    finally:
        os.waitpid(pid, 0)
        ours.close()
    assert reply == {"ok": True, "i": 7}
    assert 0 < seconds < 0.2, seconds


def test_a_packet_that_is_not_a_json_object_breaks_the_protocol() -> None:
    ours, theirs = wire.clock_pair()
    theirs.send(b"[1, 2]")
    with pytest.raises(wire.WireError):
        wire.next_packet(ours)
    theirs.close()
    with pytest.raises(wire.HungUp):
        wire.next_packet(ours)
    ours.close()
