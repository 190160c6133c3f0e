"""The mask's stream as a Triton kernel: 64-bit words XOR Triton's Philox stream (`evo/eval/masked.py` on a GPU).

The seed is read from device memory, not passed as an argument, so that a recorded CUDA graph can unmask a set
under a key that did not exist when it was recorded: the host writes the seeds into a pinned buffer right
before the replay, and the graph copies them to the device first (`evo/eval/timed_graph.py`). Word i of a
stream is Philox of (seed, i): the same bits whatever the launch's size, so a stream has no prefix problem.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit(do_not_specialize=["words"])
def _xor_philox(src_ptr, seed_ptr, out_ptr, words, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    live = offs < words
    seed = tl.load(seed_ptr)
    r0, r1, _, _ = tl.randint4x(seed, offs)
    word = (r1.to(tl.uint64) << 32) | r0.to(tl.uint64)
    x = tl.load(src_ptr + offs, mask=live, other=0)
    tl.store(out_ptr + offs, x ^ word.to(tl.int64, bitcast=True), mask=live)


def xor_philox(bits: torch.Tensor, seed: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """`bits` (int64, flat) XOR the Philox stream of `seed` (a one-element int64 tensor on the same device),
    into `out` (a new tensor when None). No host synchronisation: a CUDA graph may record it."""
    if bits.dtype != torch.int64 or bits.dim() != 1 or seed.dtype != torch.int64 or seed.numel() != 1:
        raise ValueError("xor_philox takes flat int64 words and a one-element int64 seed")
    out = torch.empty_like(bits) if out is None else out
    if bits.numel():
        _xor_philox[(triton.cdiv(bits.numel(), BLOCK),)](bits, seed, out, bits.numel(), BLOCK=BLOCK)
    return out
