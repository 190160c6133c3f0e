"""A keyed commitment of a timed call's outputs, that the candidate's process cannot steer.

Each timed call's answer carries `digest(outputs, key)`, under a key the judge draws for the workload; after the
timing, the judge fetches the outputs of the calls it picked and checks them against both their digest and the
expected values (`evo/eval/judge.py`). The child computes the digest, so it knows the key: what the digest must
resist is a child that answers a timed call with cheap, wrong outputs and their digest, then, outside the clock,
computes the right outputs and nudges their low bits (within the tolerance) until they have that same digest.

A sum of keyed terms (the digest before this one: sum of word x k_i mod 2^32) cannot resist it: its terms add,
so a few small changes of the right outputs solve for any target (a subset sum over millions of known weights).
Here nothing adds: the words are hashed in chains, 32 words a lane, each step a splitmix64 round of a 128-bit
state (two 64-bit words) with the next word, and the lanes' states hashed again the same way, level after level,
down to one state. Every step is a bijection of the state, so a change of one word always changes the result;
reaching a chosen 128-bit result from changes of low bits takes about 2^64 work (a meet in the middle), not a
subset sum.

On a GPU each level is one Triton kernel (a few levels for a 32 MB output, one read of it); on the CPU the same
arithmetic in torch (int64 arithmetic wraps as uint64's does). Both give the same bits: the judge may check on
another device than the child's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

PER_LANE = 32  # words hashed in one chain; each level leaves 2 words a lane
_G = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_M64 = (1 << 64) - 1
_BLOCK = 256


def _mix(z: int) -> int:
    """splitmix64's finaliser on a Python int (a bijection of 64-bit words)."""
    z &= _M64
    z = ((z ^ (z >> 30)) * _M1) & _M64
    z = ((z ^ (z >> 27)) * _M2) & _M64
    return z ^ (z >> 31)


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(z: torch.Tensor, n: int) -> torch.Tensor:
    """A logical right shift of int64 words (torch's `>>` on a signed tensor is arithmetic)."""
    return (z >> n) & ((1 << (64 - n)) - 1)


def _mix_t(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


_TOP = 1 << 63


def level_keys(key: int, position: int, level: int) -> tuple[int, int]:
    """The two 64-bit keys of one level of one output position (the top bit set, so that Triton types every key
    alike: 64-bit unsigned)."""
    k0 = _mix(key ^ _mix(position * _G + level + 1)) | _TOP
    return k0, _mix(k0 + _G) | _TOP


def digest_words(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes as the words the digest hashes: 32-bit, or 16-bit or single bytes widened where the size
    calls for it."""
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
    if raw.numel() % 4 == 0:
        return raw.view(torch.int32)
    if raw.numel() % 2 == 0:
        return raw.view(torch.int16).to(torch.int32)
    return raw.to(torch.int32)


def _level_torch(x: torch.Tensor, k0: int, k1: int, first: bool) -> torch.Tensor:
    """One level on any device, in torch: lane l hashes x[l], x[l + lanes], x[l + 2 lanes], ..."""
    n = x.numel()
    lanes = -(-n // PER_LANE)
    v = x.to(torch.int64)
    if first:
        v = v & 0xFFFFFFFF  # the 32-bit words, unsigned
    v = torch.cat([v, v.new_zeros(lanes * PER_LANE - n)]).view(PER_LANE, lanes)
    ids = torch.arange(lanes, dtype=torch.int64, device=x.device) * _signed(_G)
    a = _mix_t(ids + _signed((k0 ^ n) & _M64))
    b = _mix_t(ids + _signed(k1))
    for j in range(PER_LANE):
        a = _mix_t(a ^ v[j])
        b = _mix_t(b + (v[j] ^ a))
    return torch.stack([a, b], 1).reshape(-1)


def _level_triton(x: torch.Tensor, k0: int, k1: int, first: bool) -> torch.Tensor:
    n = x.numel()
    lanes = -(-n // PER_LANE)
    out = torch.empty(2 * lanes, dtype=torch.int64, device=x.device)
    grid = (-(-lanes // _BLOCK),)
    from evo.eval.digest_kernel import digest_level  # Triton: only where a GPU digest runs

    digest_level[grid](x, out, n, lanes, k0, k1, _G, _M1, _M2, PER=PER_LANE, BLOCK=_BLOCK, FIRST=first)
    return out


def state_of(t: torch.Tensor, key: int, position: int, triton: bool | None = None) -> torch.Tensor:
    """The two 64-bit words (as int64) that one output hashes to, on its device, without a host sync (so a
    CUDA graph may record it). `triton`: the Triton kernel (the default on a GPU) or torch's arithmetic."""
    x = digest_words(t)
    use_triton = x.is_cuda if triton is None else triton
    level = 0
    while True:
        k0, k1 = level_keys(key, position, level)
        x = (_level_triton if use_triton else _level_torch)(x, k0, k1, level == 0)
        level += 1
        if x.numel() == 2:
            return x


def fold(states: Sequence[tuple[int, int]], key: int) -> int:
    """The outputs' states, in order, folded into the digest: a non-negative int under 2^127."""
    h0, h1 = _mix(key), _mix(key ^ _G)
    for a, b in states:
        h0 = _mix(h0 ^ (a & _M64))
        h1 = _mix(h1 + (b & _M64) + h0)
    return ((h0 << 64) | h1) >> 1


def digest(tensors: Sequence[Any], key: int, triton: bool | None = None) -> int:
    """The keyed digest of the outputs (tensors among them; each output position under its own keys)."""
    states = []
    for pos, t in enumerate(tensors):
        if type(t) is not torch.Tensor or not t.numel():
            continue
        a, b = state_of(t, key, pos, triton).tolist()  # the position is in its level keys
        states.append((a, b))
    return fold(states, key)


def prepare_digest(device: str) -> None:
    """Compile (or load from Triton's cache) what `digest` runs on `device`, before any clock runs: both of the
    Triton kernel's variants on a GPU, nothing on a CPU."""
    if device.startswith("cuda"):
        digest([torch.zeros(4096, dtype=torch.int32, device=device)], 1)
