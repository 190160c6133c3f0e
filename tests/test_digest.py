"""The digest that commits a timed call's outputs: keyed, sees every bit, the arithmetic it says, the same bits
from torch's arithmetic and from the Triton kernel (Triton's interpreter here, the GPU in the GPU test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evo.eval import digest as D

REPO = Path(__file__).resolve().parents[1]
M64 = (1 << 64) - 1


def _outputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.randn(4097, 33, generator=g).to(torch.bfloat16),
            torch.randint(0, 255, (1001,), generator=g, dtype=torch.uint8), torch.randn(3, generator=g)]


def test_the_digest_is_keyed_and_sees_every_bit() -> None:
    x = torch.randn(257, 129).to(torch.bfloat16)
    d = D.digest([x], 42)
    assert D.digest([x.clone()], 42) == d
    assert D.digest([x], 43) != d
    words = x.view(torch.int16)
    for idx in [(0, 0), (128, 64), (256, 128)]:
        for bit in (0, 7, 15):  # the lowest bit of the mantissa too: a nudge within any tolerance
            y = words.clone()
            y[idx] ^= 1 << bit if bit < 15 else -(1 << 15)
            assert D.digest([y.view(torch.bfloat16)], 42) != d
    odd = torch.arange(7, dtype=torch.uint8)
    assert D.digest([odd, x], 42) != D.digest([x, odd], 42)  # each position under its own keys
    assert D.digest([x[:-1]], 42) != D.digest([torch.cat([x[:-1], x[-1:] * 0])], 42)  # trailing zeros count


def test_changes_that_cancel_in_a_keyed_sum_do_not_cancel_here() -> None:
    """The steering a sum of keyed terms allowed: +1 on one word and -1 on another with the same weight leave a
    sum the same; here, any two changes give another digest (200 pairs of low-bit changes)."""
    x = torch.randint(-(2**31), 2**31 - 1, (4096,), dtype=torch.int32)
    d = D.digest([x], 7)
    g = torch.Generator().manual_seed(0)
    seen = {d}
    for _ in range(200):
        i, j = torch.randint(0, 4096, (2,), generator=g).tolist()
        y = x.clone()
        y[i] += 1
        y[j] -= 1
        if torch.equal(x, y):
            continue
        seen.add(D.digest([y], 7))
    assert len(seen) > 195  # every change its own digest (i == j leaves x itself)


def _py_mix(z: int) -> int:
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _py_level(x: list[int], k0: int, k1: int) -> list[int]:
    n, lanes = len(x), -(-len(x) // D.PER_LANE)
    out = []
    for lane in range(lanes):
        ids = (lane * 0x9E3779B97F4A7C15) & M64
        a, b = _py_mix(ids + (k0 ^ n)), _py_mix(ids + k1)
        for j in range(D.PER_LANE):
            v = x[j * lanes + lane] if j * lanes + lane < n else 0
            a = _py_mix(a ^ v)
            b = _py_mix(b + (v ^ a))
        out += [a, b]
    return out


@pytest.mark.parametrize("numel", [1, 31, 32, 33, 1003])
def test_the_digest_is_the_arithmetic_it_says_it_is(numel: int) -> None:
    """Against plain integers: torch's int64 arithmetic wraps as 64-bit unsigned words do, lane by lane."""
    x = torch.randint(-(2**31), 2**31 - 1, (numel,), dtype=torch.int32)
    key = 2**61 + 12345
    level, words = 0, [w & 0xFFFFFFFF for w in x.tolist()]
    while True:
        words = _py_level(words, *D.level_keys(key, 0, level))
        level += 1
        if len(words) == 2:
            break
    assert [w & M64 for w in D.state_of(x, key, 0).tolist()] == words
    assert D.digest([x], key) == D.fold([(words[0], words[1])], key)


def test_the_triton_kernel_gives_torchs_bits() -> None:
    """The GPU's path (a Triton kernel per level), run by Triton's interpreter on the CPU, against torch's."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from tests.test_digest import _outputs; "
            "from evo.eval import digest as D; o = _outputs(); "
            "print(D.digest(o, 2**62 - 7, triton=True), D.digest(o, 2**62 - 7, triton=False))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TRITON_INTERPRET": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    by_triton, by_torch = out.stdout.split()
    assert by_triton == by_torch == str(D.digest(_outputs(), 2**62 - 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_digest_is_the_same_on_the_gpu() -> None:
    """The child digests on the GPU (Triton), the judge on whichever device it compares on: both must agree."""
    outs = _outputs()
    assert D.digest([o.cuda() for o in outs], 2**62 - 7) == D.digest(outs, 2**62 - 7)
    big = torch.randn(8 << 20, device="cuda")  # 32 MB: levels of a real output
    assert D.digest([big], 11) == D.digest([big.cpu()], 11)
