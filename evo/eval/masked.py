"""The timed calls' inputs, masked until the judge's clock runs for them.

A candidate's process is forked from the worker's zygote and inherits whatever the zygote holds. Were the
timing's inputs among it, a candidate could find them at import, compute their answers before any clock
runs, and answer each timed call with a copy (`tests/redteam/tamper/precompute_from_memory.py`). So the
timing's inputs are made by the reference job (trusted, in a child of its own) from seeds the judge drew
and told only it, and what reaches the zygote is each input's bytes XOR a stream of pseudo-random bits
from a 63-bit key that the judge also drew. The judge sends a set's key with each timed call that uses it,
inside its clock: the child unmasks there (a few memory-bound passes on the device, in the no-op
calibration's time as much as in the candidate's), so no input of the timing exists in the candidate's
process before its call.

The stream is PyTorch's generator of the device the inputs are used on (Philox on a GPU), seeded with the
key: the reference job and the candidate's child, both on the worker's device with the worker's PyTorch,
make the same stream. It is not a cipher, but recovering inputs without the key would mean predicting
that stream from the masked bytes alone, and the inputs' own distribution is all an attacker knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

Plain = int | float | bool | str | None  # a non-tensor input, passed as it is (an attribute, not data)


@dataclass(frozen=True)
class MaskedTensor:
    """One tensor input: its bytes in C order, zero-padded to whole 64-bit words, XOR the key's stream."""

    bits: torch.Tensor  # int64, flat
    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.bits.numel() * 8

    def to(self, device: str) -> MaskedTensor:
        return MaskedTensor(self.bits.to(device), self.dtype, self.shape, self.stride)


MaskedSet = tuple[MaskedTensor | Plain, ...]


def on_device(masked: MaskedSet, device: str) -> MaskedSet:
    """The set with its masked bits moved to `device` (staged there before the timing)."""
    return tuple(m.to(device) if isinstance(m, MaskedTensor) else m for m in masked)


def key_stream(key: int, index: int, words: int, device: str | torch.device) -> torch.Tensor:
    """`words` pseudo-random 64-bit words for the `index`-th tensor of a set masked with `key`, made on `device`.

    One generator per tensor, each made at the tensor's own length: on a GPU, word i of a stream depends on
    the stream's length (the launch's shape), so a prefix of a longer stream would not be the same bits."""
    sub = (key * 6364136223846793005 + index * 1442695040888963407 + 1) % 2**64  # a different seed per tensor
    g = torch.Generator(device=device).manual_seed(sub)
    return torch.empty(words, dtype=torch.int64, device=device).random_(-(2**63), None, generator=g)


def _bytes(x: torch.Tensor) -> torch.Tensor:
    flat = x.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)


def mask(inputs: tuple[object, ...], key: int, device: str) -> MaskedSet:
    """Mask an input set with `key`'s stream, made on `device` (the device the inputs will be used on)."""
    out: list[MaskedTensor | Plain] = []
    for j, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            out.append(x)  # type: ignore[arg-type]
            continue
        raw = _bytes(x.to(device))
        words = -(-raw.numel() // 8)
        padded = torch.zeros(words * 8, dtype=torch.uint8, device=device)
        padded[: raw.numel()] = raw
        stream = key_stream(key, j, words, device)
        out.append(MaskedTensor((padded.view(torch.int64) ^ stream).cpu(), x.dtype, tuple(x.shape), tuple(x.stride())))
    return tuple(out)


def _unmask_tensor(m: MaskedTensor, key: int, index: int, device: str) -> torch.Tensor:
    """The `index`-th input of a set masked with `key`, on `device`, in the reference's layout."""
    raw = (m.bits.to(device, non_blocking=True) ^ key_stream(key, index, m.bits.numel(), device)).view(torch.uint8)
    numel = math.prod(m.shape)
    flat = raw[:numel].to(torch.bool) if m.dtype == torch.bool else raw[: numel * m.dtype.itemsize].view(m.dtype)
    x = flat.view(m.shape)
    if x.stride() != m.stride and numel > 1 and all(st > 0 for st in m.stride):  # the reference's layout
        # (a transposed operand, say); an expanded one (stride 0) is handed out contiguous
        x = torch.empty_strided(m.shape, m.stride, dtype=m.dtype, device=device).copy_(x)
    return x


def unmask(masked: MaskedSet, key: int, device: str) -> tuple[object, ...]:
    """The input set that `mask` was given, on `device` (where the masked bits already are, or are copied)."""
    return tuple(_unmask_tensor(m, key, j, device) if isinstance(m, MaskedTensor) else m
                 for j, m in enumerate(masked))


def unmask_into(masked: MaskedSet, key: int, into: tuple[object, ...]) -> None:
    """Write the input set that `mask` was given into `into` (a recorded graph's inputs, of the same shapes):
    in one pass where a tensor's bytes are whole words in C order, through `unmask` elsewhere."""
    if len(into) != len(masked):
        raise ValueError(f"{len(masked)} masked inputs for {len(into)} places")
    for j, (m, dst) in enumerate(zip(masked, into, strict=True)):
        if not isinstance(m, MaskedTensor):
            if dst != m:
                raise ValueError(f"a non-tensor input differs from the one the graph was recorded with ({m!r})")
            continue
        if not isinstance(dst, torch.Tensor) or tuple(dst.shape) != m.shape or dst.dtype != m.dtype:
            raise ValueError(f"input {j}: {m.dtype} {m.shape} cannot be written into {dst!r:.80}")
        if (dst.is_contiguous() and dst.dtype != torch.bool and dst.numel() * dst.element_size() == m.nbytes
                and dst.storage_offset() * dst.element_size() % 8 == 0):
            stream = key_stream(key, j, m.bits.numel(), dst.device)
            torch.bitwise_xor(m.bits.to(dst.device, non_blocking=True), stream,
                              out=dst.view(-1).view(torch.uint8).view(torch.int64))
        else:
            dst.copy_(_unmask_tensor(m, key, j, str(dst.device)))


def save(masked: list[MaskedSet], path: Path) -> None:
    """Write one workload's masked sets (only tensors and plain values: read back with weights_only)."""
    rows = [[{"bits": m.bits, "dtype": str(m.dtype).removeprefix("torch."), "shape": list(m.shape),
              "stride": list(m.stride)} if isinstance(m, MaskedTensor) else {"plain": m} for m in s] for s in masked]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rows, path)


def load(path: Path) -> list[MaskedSet]:
    """Read what `save` wrote."""
    rows = torch.load(path, weights_only=True)
    return [tuple(MaskedTensor(r["bits"], getattr(torch, r["dtype"]), tuple(r["shape"]), tuple(r["stride"]))
                  if "bits" in r else r["plain"] for r in s) for s in rows]


def nbytes(masked: MaskedSet) -> int:
    return sum(m.nbytes for m in masked if isinstance(m, MaskedTensor))
