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

The stream, on a GPU, is Triton's Philox (10 rounds) under a 64-bit seed drawn from the key and the tensor's
position (`evo/eval/masked_kernel.py`), the seed read from device memory so that a recorded CUDA graph can
unmask under a key that did not exist when it was recorded (`evo/eval/timed_graph.py`); on a CPU, PyTorch's
generator seeded the same way. The reference job and the candidate's child, both on the worker's device with
the worker's PyTorch and Triton, make the same stream. It is not a cipher, but recovering inputs without the
key would mean predicting that stream from the masked bytes alone, and the inputs' own distribution is all an
attacker knows.
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


def stream_seed(key: int, index: int) -> int:
    """The seed of the `index`-th tensor's stream under `key`, as a signed 64-bit value (a different seed per
    tensor of a set)."""
    sub = (key * 6364136223846793005 + index * 1442695040888963407 + 1) % 2**64
    return sub - 2**64 if sub >= 2**63 else sub


def xor_stream(bits: torch.Tensor, key: int, index: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """`bits` (flat int64 words) XOR the stream of the `index`-th tensor of a set masked with `key`, on the
    device `bits` lie on, into `out` when given: masking and unmasking are this same step."""
    seed = stream_seed(key, index)
    if bits.is_cuda:
        from evo.eval.masked_kernel import xor_philox  # Triton: only where a GPU masks

        return xor_philox(bits, torch.tensor([seed], dtype=torch.int64, device=bits.device), out)
    g = torch.Generator(device=bits.device).manual_seed(seed % 2**64)
    stream = torch.empty(bits.numel(), dtype=torch.int64, device=bits.device).random_(-(2**63), None, generator=g)
    return torch.bitwise_xor(bits, stream, out=out) if out is not None else bits ^ stream


def prepare_stream(device: str) -> None:
    """Compile (or load from Triton's cache) the stream's kernel on a GPU before any clock runs; nothing on a CPU."""
    if device.startswith("cuda"):
        xor_stream(torch.zeros(8, dtype=torch.int64, device=device), 1, 0)


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
        out.append(MaskedTensor(xor_stream(padded.view(torch.int64), key, j).cpu(), x.dtype, tuple(x.shape),
                                tuple(x.stride())))
    return tuple(out)


def _unmask_tensor(m: MaskedTensor, key: int, index: int, device: str) -> torch.Tensor:
    """The `index`-th input of a set masked with `key`, on `device`, in the reference's layout."""
    raw = xor_stream(m.bits.to(device, non_blocking=True), key, index).view(torch.uint8)
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
        if writable_in_one_pass(m, dst):
            xor_stream(m.bits.to(dst.device, non_blocking=True), key, j, out=whole_words(dst))
        else:
            dst.copy_(_unmask_tensor(m, key, j, str(dst.device)))


def writable_in_one_pass(m: MaskedTensor, dst: torch.Tensor) -> bool:
    """Whether `dst` is `m`'s bytes as whole 64-bit words in C order (no padding, no other layout), so that
    the stream XORs straight into it."""
    return (dst.is_contiguous() and dst.dtype != torch.bool and dst.numel() * dst.element_size() == m.nbytes
            and dst.storage_offset() * dst.element_size() % 8 == 0)


def whole_words(dst: torch.Tensor) -> torch.Tensor:
    """`dst`'s memory as flat int64 words (`writable_in_one_pass` holds)."""
    return dst.view(-1).view(torch.uint8).view(torch.int64)


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
