"""The timing's inputs, masked until their timed calls (evo/eval/masked.py): exact round trips, nothing in clear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evo.eval import masked


def _inputs() -> tuple[object, ...]:
    g = torch.Generator().manual_seed(3)
    return (torch.randn(33, 7, generator=g).to(torch.bfloat16),  # 462 bytes: padded to whole words
            torch.randn(5, 4, generator=g).t(),  # transposed: its layout must come back
            torch.randint(-100, 100, (17,), generator=g, dtype=torch.int8),
            torch.rand(9, generator=g) > 0.5,
            torch.randint(0, 1 << 40, (3, 2), generator=g),
            1e-5, 4, None)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape
                    and x.stride() == y.stride() and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def test_unmask_gives_back_every_input_exactly(tmp_path: Path) -> None:
    inputs = _inputs()
    m = masked.mask(inputs, 123456789012345, "cpu")
    assert _same(masked.unmask(m, 123456789012345, "cpu"), inputs)
    masked.save([m, m], tmp_path / "w.pt")
    back = masked.load(tmp_path / "w.pt")
    assert len(back) == 2 and _same(masked.unmask(back[1], 123456789012345, "cpu"), inputs)


def test_the_masked_bits_hold_no_input_in_clear() -> None:
    x = torch.arange(4096, dtype=torch.int64)  # an input anyone could guess
    m = masked.mask((x,), 99, "cpu")[0]
    assert isinstance(m, masked.MaskedTensor)
    assert not torch.equal(m.bits, x) and (m.bits == x).sum() < 4
    # Bytes of the bits look uniform: every byte value, none much more often than 1/256.
    counts = torch.bincount(m.bits.view(torch.uint8).to(torch.int64), minlength=256)
    assert counts.min() > 0 and counts.max() < 4 * counts.float().mean()


def test_another_key_gives_other_inputs() -> None:
    inputs = _inputs()
    m = masked.mask(inputs, 5, "cpu")
    wrong = masked.unmask(m, 6, "cpu")
    assert not torch.equal(wrong[0].view(torch.int16), inputs[0].view(torch.int16))  # type: ignore[union-attr]


def test_two_sets_masked_with_their_own_keys_share_no_stream() -> None:
    x = torch.zeros(64, dtype=torch.int64)  # zeros: the masked bits are the stream itself
    a, b = masked.mask((x,), 7, "cpu")[0], masked.mask((x,), 8, "cpu")[0]
    assert isinstance(a, masked.MaskedTensor) and isinstance(b, masked.MaskedTensor)
    assert not torch.equal(a.bits, b.bits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_stream_made_on_the_gpu_unmasks_there() -> None:
    inputs = _inputs()
    m = masked.mask(inputs, 42, "cuda")
    back = masked.unmask(tuple(t.to("cuda") if isinstance(t, masked.MaskedTensor) else t for t in m), 42, "cuda")
    assert _same(tuple(x.cpu() if isinstance(x, torch.Tensor) else x for x in back), inputs)


def _places(inputs: tuple[object, ...], device: str) -> tuple[object, ...]:
    """What a recorded graph holds: clones of a set of the same shapes and layouts, here zeroed."""
    return tuple(torch.zeros_like(x).to(device) if isinstance(x, torch.Tensor) else x for x in inputs)


def test_unmask_into_writes_the_same_inputs_in_place() -> None:
    """The timed call's path (whole-word tensors XORed straight into the graph's inputs; padded, transposed
    and bool ones through unmask) gives what unmask gives."""
    inputs = _inputs()
    m = masked.mask(inputs, 31337, "cpu")
    into = _places(inputs, "cpu")
    masked.unmask_into(m, 31337, into)
    assert _same(into, inputs)
    with pytest.raises(ValueError, match="non-tensor input differs"):
        masked.unmask_into(m, 31337, into[:-1] + (3,))
    with pytest.raises(ValueError, match="cannot be written"):
        masked.unmask_into(m, 31337, (torch.zeros(33, 8),) + into[1:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_unmask_into_on_the_gpu() -> None:
    inputs = _inputs()
    m = masked.on_device(masked.mask(inputs, 42, "cuda"), "cuda")
    into = _places(inputs, "cuda")
    masked.unmask_into(m, 42, into)
    assert _same(tuple(x.cpu() if isinstance(x, torch.Tensor) else x for x in into), inputs)


def test_the_gpus_stream_kernel_under_tritons_interpreter() -> None:
    """The kernel a GPU masks with (`masked_kernel.xor_philox`, its seed read from device memory): masking twice
    gives the words back, word i is the same whatever the stream's length (a graph's input and the reference's
    are masked by launches of different sizes), another seed gives other bits, and the bytes look uniform."""
    code = """
import torch
from evo.eval.masked_kernel import xor_philox
seed, other = torch.tensor([-1234567890123]), torch.tensor([7])
x = torch.arange(3000, dtype=torch.int64)
once = xor_philox(x, seed)
assert torch.equal(xor_philox(once, seed), x) and int((once == x).sum()) == 0
z = torch.zeros(5000, dtype=torch.int64)
assert torch.equal(xor_philox(z, seed)[:3000], xor_philox(z[:3000].clone(), seed))
assert int((xor_philox(z, seed) == xor_philox(z, other)).sum()) == 0
counts = torch.bincount(xor_philox(z, seed).view(torch.uint8).long(), minlength=256)
assert counts.min() > 0 and counts.max() < 2 * counts.float().mean(), counts
print("ok")
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
